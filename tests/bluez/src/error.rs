//! BlueZ's D-Bus errors (`org.bluez.Error.*`), as the double returns them.

/// An `org.bluez.Error.*` reply, with BlueZ's message.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.bluez.Error")]
pub enum BluezError {
    #[zbus(error)]
    ZBus(zbus::Error),
    Failed(String),
    NotReady(String),
    Blocked(String),
    NotSupported(String),
    NotPermitted(String),
    InvalidValueLength(String),
    DoesNotExist(String),
}
