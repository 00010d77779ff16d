//! `org.bluez.Adapter1` at `/org/bluez/hci0`: power, the discovery filter,
//! discovery. Setting `Powered` to true fails while the user has switched
//! Bluetooth off (rfkill), as btleplug's scan does before it starts.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use zbus::zvariant::OwnedValue;

use crate::error::BluezError;
use crate::world::World;

pub(crate) struct Adapter {
    pub world: Weak<World>,
}

impl Adapter {
    fn world(&self) -> Result<Arc<World>, BluezError> {
        self.world
            .upgrade()
            .ok_or_else(|| BluezError::Failed("the double is gone".into()))
    }

    fn flag(&self, f: impl FnOnce(&crate::world::State) -> bool) -> bool {
        self.world.upgrade().is_some_and(|w| f(&w.state()))
    }
}

#[zbus::interface(name = "org.bluez.Adapter1")]
impl Adapter {
    async fn set_discovery_filter(
        &self,
        filter: HashMap<String, OwnedValue>,
    ) -> Result<(), BluezError> {
        let uuids = filter
            .get("UUIDs")
            .and_then(|v| Vec::<String>::try_from(v.clone()).ok())
            .unwrap_or_default();
        self.world()?.set_discovery_filter(uuids);
        Ok(())
    }

    async fn start_discovery(&self) -> Result<(), BluezError> {
        self.world()?.start_discovery().await
    }

    async fn stop_discovery(&self) -> Result<(), BluezError> {
        self.world()?.stop_discovery().await
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Address")]
    fn address(&self) -> String {
        "00:1A:7D:DA:71:13".into()
    }

    #[zbus(property(emits_changed_signal = "false"), name = "AddressType")]
    fn address_type(&self) -> String {
        "public".into()
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Name")]
    fn name(&self) -> String {
        "pos-bluez-double".into()
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Alias")]
    fn alias(&self) -> String {
        "pos-bluez-double".into()
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Modalias")]
    fn modalias(&self) -> String {
        "usb:v1D6Bp0246d0542".into()
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Powered")]
    fn powered(&self) -> bool {
        self.flag(|s| s.powered)
    }

    #[zbus(property, name = "Powered")]
    async fn set_powered(&self, on: bool) -> zbus::fdo::Result<()> {
        let world = self
            .world
            .upgrade()
            .ok_or_else(|| zbus::fdo::Error::Failed("the double is gone".into()))?;
        world
            .set_powered(on, false)
            .await
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }

    #[zbus(property(emits_changed_signal = "false"), name = "Discovering")]
    fn discovering(&self) -> bool {
        self.flag(|s| s.discovering)
    }

    #[zbus(property(emits_changed_signal = "false"), name = "UUIDs")]
    fn uuids(&self) -> Vec<String> {
        Vec::new()
    }
}
