//! [`Storage`] over files in a directory: one file per slot, replaced atomically (write to a
//! temporary file, fsync, rename), so a crash leaves either the old or the new value.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use qos_edge_core::storage::{Slot, Storage};

/// Files `boot.bin`, `config.cbor` and `outbox.bin` in a directory.
#[derive(Debug, Clone)]
pub struct FileStorage {
    dir: PathBuf,
}

impl FileStorage {
    /// Storage in `dir`, created if missing.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(FileStorage {
            dir: dir.to_owned(),
        })
    }

    /// The file of `slot`.
    pub fn path(&self, slot: Slot) -> PathBuf {
        self.dir.join(match slot {
            Slot::Boot => "boot.bin",
            Slot::Config => "config.cbor",
            Slot::Outbox => "outbox.bin",
        })
    }
}

impl Storage for FileStorage {
    type Error = std::io::Error;

    fn read<'b>(&mut self, slot: Slot, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, Self::Error> {
        let bytes = match fs::read(self.path(slot)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let out = buf.get_mut(..bytes.len()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is larger than expected", self.path(slot).display()),
            )
        })?;
        out.copy_from_slice(&bytes);
        Ok(Some(out))
    }

    fn write(&mut self, slot: Slot, bytes: &[u8]) -> Result<(), Self::Error> {
        let path = self.path(slot);
        let tmp = path.with_extension("tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qos_edge_core::storage::next_boot;

    #[test]
    fn epochs_advance_across_reopen_and_corruption_is_an_error() {
        let dir = std::env::temp_dir().join(format!("qos-edge-storage-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut s = FileStorage::open(&dir).unwrap();
        assert_eq!(next_boot(&mut s).unwrap().epoch, 1);
        let mut s = FileStorage::open(&dir).unwrap();
        assert_eq!(next_boot(&mut s).unwrap().epoch, 2);
        fs::write(s.path(Slot::Boot), [0xff; 9]).unwrap();
        assert!(
            next_boot(&mut s).is_err(),
            "a corrupt epoch must not restart numbering"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
