//! Envelope encryption for the store (SPEC section 4): the data key, the
//! keys derived from it, sealing and MACs, and the file-backed
//! [`FileKeyProvider`]. Knows nothing about SQLite.
//!
//! The key-encryption key comes from the platform's
//! [`KeyProvider`]; the data key is
//! generated here at store creation and only ever stored wrapped by it.
//! From the data key, HKDF-SHA256 derives one key per purpose: sealing
//! records (AES-256-GCM, random 96-bit nonces), the MAC chain over the
//! journal (HMAC-SHA256), the record-key index, the store header MAC and the
//! rollback anchor MAC.

use std::fmt;
use std::fs;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pos_rules::crypto::{
    ct_eq, fill_random, hex, random_array, wipe, CryptoError, Kek, KeyError, KeyProvider,
    SecretKey, ID_LEN, KEY_LEN, MAC_LEN,
};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use ring::hmac;

const KEK_FILE_MAGIC: &[u8; 8] = b"POSKEK1\0";
const KEK_FILE_LEN: usize = 8 + ID_LEN + KEY_LEN;

/// A [`KeyProvider`] for desktops and tests: a random KEK in a file created
/// with owner-only permissions (0600 on Unix), and rollback anchors in files
/// beside it (`<key file>.anchor-<store id>`).
///
/// It protects the store's data against a copy of the database alone; a copy
/// of the key file with it opens the store. Keep the key file outside the
/// database's folder (and out of backups) where the platform allows.
pub struct FileKeyProvider {
    path: PathBuf,
    /// Serialises anchor writes from several stores sharing the provider.
    anchor_lock: Mutex<()>,
}

impl fmt::Debug for FileKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKeyProvider")
            .field("path", &self.path)
            .finish()
    }
}

impl FileKeyProvider {
    /// Uses the key file at `path`, creating it with a fresh random key if
    /// it does not exist. A file that exists but is not a key file is an
    /// error and is left alone.
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref().to_path_buf();
        let provider = FileKeyProvider {
            path,
            anchor_lock: Mutex::new(()),
        };
        match provider.read_kek() {
            Ok(_) => Ok(provider),
            Err(KeyFileError::Missing) => {
                provider.create_key_file()?;
                provider.read_kek().map_err(KeyFileError::into_key_error)?;
                Ok(provider)
            }
            Err(e) => Err(e.into_key_error()),
        }
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn create_key_file(&self) -> Result<(), KeyError> {
        let mut buf = [0u8; KEK_FILE_LEN];
        buf[..8].copy_from_slice(KEK_FILE_MAGIC);
        let r = fill_random(&mut buf[8..])
            .map_err(|e| KeyError::Failed(e.to_string()))
            .and_then(|()| {
                // Written whole to a private temporary file, then linked into
                // place: a crash never leaves a partial key file, and a
                // concurrent creator's key wins (the link fails if it exists).
                let tmp = self
                    .path
                    .with_extension(format!("tmp-{}", std::process::id()));
                let _ = fs::remove_file(&tmp);
                let written = private_file_options()
                    .create_new(true)
                    .open(&tmp)
                    .and_then(|mut f| f.write_all(&buf).and_then(|()| f.sync_all()))
                    .map_err(|e| io_failure("write the key file", &e));
                let linked = written.and_then(|()| match fs::hard_link(&tmp, &self.path) {
                    Ok(()) => Ok(()),
                    // Another caller created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                    Err(e) => Err(io_failure("create the key file", &e)),
                });
                let _ = fs::remove_file(&tmp);
                linked?;
                sync_parent(&self.path);
                Ok(())
            });
        wipe(&mut buf);
        r
    }

    fn read_kek(&self) -> Result<Kek, KeyFileError> {
        let mut f = match fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyFileError::Missing)
            }
            Err(e) => return Err(KeyFileError::Io(io_failure("open the key file", &e))),
        };
        let mut buf = Vec::with_capacity(KEK_FILE_LEN + 1);
        // Reads at most one byte more than a key file holds.
        let read = Read::by_ref(&mut f)
            .take(KEK_FILE_LEN as u64 + 1)
            .read_to_end(&mut buf);
        let result = match read {
            Err(e) => Err(KeyFileError::Io(io_failure("read the key file", &e))),
            Ok(_) if buf.len() != KEK_FILE_LEN || &buf[..8] != KEK_FILE_MAGIC => Err(
                KeyFileError::Io(KeyError::Failed("the key file is malformed".into())),
            ),
            Ok(_) => {
                let id = hex(&buf[8..8 + ID_LEN]);
                let mut key = [0u8; KEY_LEN];
                key.copy_from_slice(&buf[8 + ID_LEN..]);
                let kek = Kek::new(id, SecretKey::from_bytes(key));
                wipe(&mut key);
                Ok(kek)
            }
        };
        wipe(&mut buf);
        result
    }

    fn anchor_path(&self, store_id: &str) -> Result<PathBuf, KeyError> {
        if store_id.is_empty() || !store_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyError::Failed("invalid store id for an anchor".into()));
        }
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".anchor-{store_id}"));
        Ok(PathBuf::from(name))
    }
}

enum KeyFileError {
    Missing,
    Io(KeyError),
}

impl KeyFileError {
    fn into_key_error(self) -> KeyError {
        match self {
            KeyFileError::Missing => KeyError::Failed("the key file is missing".into()),
            KeyFileError::Io(e) => e,
        }
    }
}

impl KeyProvider for FileKeyProvider {
    fn key_encryption_key(&self) -> Result<Kek, KeyError> {
        self.read_kek().map_err(KeyFileError::into_key_error)
    }

    fn keeps_anchors(&self) -> bool {
        true
    }

    fn save_anchor(&self, store_id: &str, anchor: &[u8]) -> Result<(), KeyError> {
        let path = self.anchor_path(store_id)?;
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let _g = self.anchor_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = private_file_options()
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io_failure("create the anchor file", &e))?;
        f.write_all(anchor)
            .and_then(|()| f.sync_all())
            .map_err(|e| io_failure("write the anchor file", &e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| io_failure("replace the anchor file", &e))?;
        sync_parent(&path);
        Ok(())
    }

    fn load_anchor(&self, store_id: &str) -> Result<Option<Vec<u8>>, KeyError> {
        let path = self.anchor_path(store_id)?;
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_failure("read the anchor file", &e)),
        }
    }
}

/// Write, create, owner-only permissions on Unix.
fn private_file_options() -> fs::OpenOptions {
    let mut o = fs::OpenOptions::new();
    o.write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

/// Makes a rename or a creation in the parent folder durable (best effort:
/// not every platform can open a folder).
pub(crate) fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent() {
        let dir = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

fn io_failure(what: &str, e: &std::io::Error) -> KeyError {
    KeyError::Failed(format!("cannot {what}: {}", e.kind()))
}

/// Random 96-bit nonces drawn from the operating system's generator in one
/// call (a commit seals several records), each handed out once. The only
/// way to give [`StoreKeys::seal_in_place`] a nonce.
pub(crate) struct FreshNonces {
    bytes: Vec<u8>,
    next: usize,
}

impl FreshNonces {
    /// `n` nonces.
    pub(crate) fn draw(n: usize) -> Result<Self, CryptoError> {
        let mut bytes = vec![0u8; NONCE_LEN.checked_mul(n).ok_or(CryptoError::Random)?];
        fill_random(&mut bytes)?;
        Ok(FreshNonces { bytes, next: 0 })
    }

    fn next(&mut self) -> Option<[u8; NONCE_LEN]> {
        let end = self.next.checked_add(NONCE_LEN)?;
        let nonce = <[u8; NONCE_LEN]>::try_from(self.bytes.get(self.next..end)?).ok()?;
        self.next = end;
        Some(nonce)
    }
}

/// AES-256-GCM with a random 96-bit nonce: returns `nonce || ciphertext || tag`.
fn seal_with(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let nonce = random_array::<NONCE_LEN>()?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let mut body = out.split_off(NONCE_LEN);
    let r = key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    );
    if r.is_err() {
        wipe(&mut body);
        return Err(CryptoError::KeySetup);
    }
    out.append(&mut body);
    Ok(out)
}

/// Opens `nonce || ciphertext || tag` sealed by [`seal_with`].
fn open_with(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(CryptoError::Authentication);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Authentication)?;
    let mut buf = body.to_vec();
    match key.open_in_place(nonce, Aad::from(aad), &mut buf) {
        Ok(plain) => {
            let n = plain.len();
            buf.truncate(n);
            Ok(buf)
        }
        Err(_) => {
            wipe(&mut buf);
            Err(CryptoError::Authentication)
        }
    }
}

fn aes_key(bytes: &[u8; KEY_LEN]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::KeySetup)
}

/// The store's data key: 256 random bits, zeroed on drop.
#[derive(Debug)]
pub(crate) struct DataKey(SecretKey);

impl DataKey {
    pub(crate) fn generate() -> Result<Self, CryptoError> {
        SecretKey::generate().map(DataKey)
    }

    /// Seals the data key under `kek`; `aad` binds it to its store.
    pub(crate) fn wrap(&self, kek: &Kek, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal_with(&aes_key(kek.secret().expose())?, aad, self.0.expose())
    }

    /// Opens a wrapped data key; fails with [`CryptoError::Authentication`]
    /// under a wrong KEK or another store's associated data.
    pub(crate) fn unwrap(kek: &Kek, aad: &[u8], wrapped: &[u8]) -> Result<Self, CryptoError> {
        let mut plain = open_with(&aes_key(kek.secret().expose())?, aad, wrapped)?;
        if plain.len() != KEY_LEN {
            wipe(&mut plain);
            return Err(CryptoError::Authentication);
        }
        let mut k = [0u8; KEY_LEN];
        k.copy_from_slice(&plain);
        wipe(&mut plain);
        let key = DataKey(SecretKey::from_bytes(k));
        wipe(&mut k);
        Ok(key)
    }

    /// Derives the working keys.
    pub(crate) fn derive(&self) -> Result<StoreKeys, CryptoError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"pos-core/store/v1").extract(self.0.expose());
        let aead_key = |info: &'static [u8]| -> Result<LessSafeKey, CryptoError> {
            let infos = [info];
            let okm = prk
                .expand(&infos, &AES_256_GCM)
                .map_err(|_| CryptoError::KeySetup)?;
            Ok(LessSafeKey::new(UnboundKey::from(okm)))
        };
        let mac_key = |info: &'static [u8]| -> Result<hmac::Key, CryptoError> {
            let infos = [info];
            let okm = prk
                .expand(&infos, hmac::HMAC_SHA256)
                .map_err(|_| CryptoError::KeySetup)?;
            Ok(hmac::Key::from(okm))
        };
        Ok(StoreKeys {
            records: aead_key(b"records")?,
            chain: mac_key(b"chain")?,
            index: mac_key(b"index")?,
            header: mac_key(b"header")?,
            anchor: mac_key(b"anchor")?,
        })
    }
}

/// The keys derived from the data key, one per purpose.
pub(crate) struct StoreKeys {
    records: LessSafeKey,
    chain: hmac::Key,
    index: hmac::Key,
    header: hmac::Key,
    anchor: hmac::Key,
}

impl fmt::Debug for StoreKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKeys(<redacted>)")
    }
}

/// Which derived MAC key to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MacKey {
    /// The journal's MAC chain.
    Chain,
    /// Record keys (a keyed hash of an id, so ids are not stored in clear).
    Index,
    /// The store header (the `meta` row).
    Header,
    /// The rollback anchor.
    Anchor,
}

impl StoreKeys {
    /// Seals a record: `nonce || ciphertext || tag`.
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal_with(&self.records, aad, plaintext)
    }

    /// Seals `plaintext` in place (it becomes `ciphertext || tag`) under
    /// the next of `nonces`, and returns that nonce. On failure
    /// `plaintext` is wiped.
    pub(crate) fn seal_in_place(
        &self,
        aad: &[u8],
        nonces: &mut FreshNonces,
        plaintext: &mut Vec<u8>,
    ) -> Result<[u8; NONCE_LEN], CryptoError> {
        let Some(nonce) = nonces.next() else {
            wipe(plaintext);
            return Err(CryptoError::Random);
        };
        let r = self.records.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            plaintext,
        );
        if r.is_err() {
            wipe(plaintext);
            return Err(CryptoError::KeySetup);
        }
        Ok(nonce)
    }

    /// Opens a record sealed by [`StoreKeys::seal`] with the same `aad`.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open_with(&self.records, aad, sealed)
    }

    /// Opens, in place, a body (`ciphertext || tag`) sealed by
    /// [`StoreKeys::seal`] with `nonce` and `aad`: no copy of a large record
    /// (the snapshot). On success `body` holds the plaintext; on failure it
    /// is wiped.
    pub(crate) fn open_in_place(
        &self,
        aad: &[u8],
        nonce: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Authentication)?;
        match self.records.open_in_place(nonce, Aad::from(aad), body) {
            Ok(plain) => {
                let n = plain.len();
                body.truncate(n);
                Ok(())
            }
            Err(_) => {
                wipe(body);
                Err(CryptoError::Authentication)
            }
        }
    }

    fn key(&self, which: MacKey) -> &hmac::Key {
        match which {
            MacKey::Chain => &self.chain,
            MacKey::Index => &self.index,
            MacKey::Header => &self.header,
            MacKey::Anchor => &self.anchor,
        }
    }

    /// HMAC-SHA256 over the concatenation of `parts` (callers length-prefix
    /// variable fields so the concatenation is unambiguous).
    pub(crate) fn mac(&self, which: MacKey, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut ctx = hmac::Context::with_key(self.key(which));
        for p in parts {
            ctx.update(p);
        }
        let tag = ctx.sign();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Checks a MAC in constant time.
    pub(crate) fn verify(&self, which: MacKey, parts: &[&[u8]], mac: &[u8]) -> bool {
        let mut ctx = hmac::Context::with_key(self.key(which));
        for p in parts {
            ctx.update(p);
        }
        let expected = ctx.sign();
        ct_eq(expected.as_ref(), mac)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn kek(id: &str, byte: u8) -> Kek {
        Kek::new(id, SecretKey::from_bytes([byte; KEY_LEN]))
    }

    /// A batch's nonces are each used once, and sealing with none left
    /// refuses and wipes the plaintext; a record sealed in place opens.
    #[test]
    fn fresh_nonces_are_handed_out_once_and_seal_in_place() {
        let keys = DataKey::generate().unwrap().derive().unwrap();
        let mut nonces = FreshNonces::draw(2).unwrap();
        let mut a = b"first".to_vec();
        let mut b = b"second".to_vec();
        let na = keys.seal_in_place(b"aad", &mut nonces, &mut a).unwrap();
        let nb = keys.seal_in_place(b"aad", &mut nonces, &mut b).unwrap();
        assert_ne!(na, nb);
        let mut c = b"third".to_vec();
        assert_eq!(
            keys.seal_in_place(b"aad", &mut nonces, &mut c),
            Err(CryptoError::Random)
        );
        assert!(c.iter().all(|&x| x == 0), "wiped");
        let opened = keys.open(b"aad", &[&na[..], &a[..]].concat()).unwrap();
        assert_eq!(opened, b"first");
        assert!(keys.open(b"other", &[&nb[..], &b[..]].concat()).is_err());
    }

    #[test]
    fn a_data_key_unwraps_only_with_its_kek_and_associated_data() {
        let dk = DataKey::generate().unwrap();
        let wrapped = dk.wrap(&kek("a", 1), b"store-1").unwrap();
        let back = DataKey::unwrap(&kek("a", 1), b"store-1", &wrapped).unwrap();
        assert_eq!(back.0.expose(), dk.0.expose());
        assert_eq!(
            DataKey::unwrap(&kek("a", 2), b"store-1", &wrapped).err(),
            Some(CryptoError::Authentication)
        );
        assert_eq!(
            DataKey::unwrap(&kek("a", 1), b"store-2", &wrapped).err(),
            Some(CryptoError::Authentication)
        );
        let mut flipped = wrapped.clone();
        flipped[20] ^= 1;
        assert!(DataKey::unwrap(&kek("a", 1), b"store-1", &flipped).is_err());
        assert!(DataKey::unwrap(&kek("a", 1), b"store-1", &wrapped[..10]).is_err());
    }

    #[test]
    fn sealed_records_are_bound_to_their_associated_data() {
        let keys = DataKey::generate().unwrap().derive().unwrap();
        let a = keys.seal(b"row 1", b"hello").unwrap();
        let b = keys.seal(b"row 1", b"hello").unwrap();
        assert_ne!(a, b, "random nonces: two seals of one value differ");
        assert_eq!(keys.open(b"row 1", &a).unwrap(), b"hello");
        assert_eq!(
            keys.open(b"row 2", &a),
            Err(CryptoError::Authentication),
            "moved to another row"
        );
        let mut edited = a.clone();
        let last = edited.len() - 1;
        edited[last] ^= 0x80;
        assert_eq!(
            keys.open(b"row 1", &edited),
            Err(CryptoError::Authentication)
        );
        let other = DataKey::generate().unwrap().derive().unwrap();
        assert_eq!(other.open(b"row 1", &a), Err(CryptoError::Authentication));
    }

    #[test]
    fn derived_keys_differ_by_purpose() {
        let keys = DataKey::generate().unwrap().derive().unwrap();
        let parts: &[&[u8]] = &[b"x"];
        let chain = keys.mac(MacKey::Chain, parts);
        assert_ne!(chain, keys.mac(MacKey::Index, parts));
        assert_ne!(chain, keys.mac(MacKey::Header, parts));
        assert_ne!(chain, keys.mac(MacKey::Anchor, parts));
        assert!(keys.verify(MacKey::Chain, parts, &chain));
        assert!(!keys.verify(MacKey::Index, parts, &chain));
    }

    #[test]
    fn key_material_is_never_printed() {
        let k = kek("kek-1", 0xAB);
        let dk = DataKey::generate().unwrap();
        let keys = dk.derive().unwrap();
        for s in [format!("{k:?}"), format!("{dk:?}"), format!("{keys:?}")] {
            assert!(s.contains("redacted"), "{s}");
            assert!(!s.to_lowercase().contains("abab"), "{s}");
            assert!(!s.contains("171"), "{s}");
        }
    }
}
