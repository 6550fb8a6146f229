//! Replacing the keyring file so that Redis, reading it at any moment, sees the old ring or
//! the new one and never a mixture: a temporary file in the same directory, mode 0600, synced,
//! then renamed over the old one, then the directory synced so the rename survives a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The only mode a keyring is written with: the module refuses any group or other bit.
pub const MODE: u32 = 0o600;

/// A numeric owner for the keyring file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Why the file could not be replaced. The old file is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A file system step failed.
    #[error("{step} {}: {source}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The file changed between the moment it was read and the rename.
    #[error("{} changed while it was being rewritten; nothing was written, run again", .0.display())]
    Changed(PathBuf),
    /// The owner name is neither a user (with an optional group) nor numeric.
    #[error("unknown owner '{0}': give USER, USER:GROUP or UID:GID")]
    UnknownOwner(String),
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// Resolves `USER`, `USER:GROUP` or `UID:GID`. A user alone brings its primary group.
pub fn resolve_owner(spec: &str) -> Result<Owner, WriteError> {
    let unknown = || WriteError::UnknownOwner(spec.to_string());
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let found = nix::unistd::User::from_name(user)
                .ok()
                .flatten()
                .ok_or_else(unknown)?;
            (found.uid.as_raw(), Some(found.gid.as_raw()))
        }
    };
    let gid = match group {
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let found = nix::unistd::Group::from_name(group)
                    .ok()
                    .flatten()
                    .ok_or_else(unknown)?;
                found.gid.as_raw()
            }
        },
        None => primary_gid.ok_or_else(unknown)?,
    };
    Ok(Owner { uid, gid })
}

/// The owner of the file at `path`, or `None` when there is no file.
pub fn owner_of(path: &Path) -> Result<Option<Owner>, WriteError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        })),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_err("reading the owner of", path)(err)),
    }
}

/// Replaces `path` with `contents`, mode 0600, owned by `owner` (or by the caller when
/// `None`). `previous` is what the caller read from `path` (`None`: there was no file); if the
/// file no longer holds it, nothing is replaced.
pub fn replace(
    path: &Path,
    previous: Option<&[u8]>,
    contents: &[u8],
    owner: Option<Owner>,
) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let temp = temp_path(dir, path);
    let result = write_temp(&temp, contents, owner).and_then(|()| {
        unchanged(path, previous)?;
        fs::rename(&temp, path).map_err(io_err("renaming over", path))
    });
    if result.is_err() {
        let _ = fs::remove_file(&temp);
        return result;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing the directory", dir))
}

fn temp_path(dir: &Path, path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "keyring".to_string());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()))
}

fn write_temp(temp: &Path, contents: &[u8], owner: Option<Owner>) -> Result<(), WriteError> {
    // create_new: never follow a link or reuse a file someone planted under this name.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .open(temp)
        .map_err(io_err("creating", temp))?;
    // The umask can only have removed bits; set the mode exactly.
    file.set_permissions(fs::Permissions::from_mode(MODE))
        .map_err(io_err("setting the mode of", temp))?;
    if let Some(owner) = owner {
        let meta = file.metadata().map_err(io_err("reading", temp))?;
        if (meta.uid(), meta.gid()) != (owner.uid, owner.gid) {
            std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid))
                .map_err(io_err("changing the owner (needs root) of", temp))?;
        }
    }
    file.write_all(contents).map_err(io_err("writing", temp))?;
    file.sync_all().map_err(io_err("syncing", temp))
}

fn unchanged(path: &Path, previous: Option<&[u8]>) -> Result<(), WriteError> {
    let now = match fs::read(path) {
        Ok(bytes) => Some(zeroize::Zeroizing::new(bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(io_err("reading", path)(err)),
    };
    if now.as_deref().map(Vec::as_slice) != previous {
        return Err(WriteError::Changed(path.to_path_buf()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn replaces_with_mode_0600_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        replace(&path, Some(b"old"), b"new", None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode_of(&path), MODE);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn creates_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring");
        replace(&path, None, b"new", None).unwrap();
        assert_eq!(mode_of(&path), MODE);
    }

    #[test]
    fn a_concurrent_change_wins_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring");
        fs::write(&path, b"edited meanwhile").unwrap();
        let err = replace(&path, Some(b"what we read"), b"new", None).unwrap_err();
        assert!(matches!(err, WriteError::Changed(_)), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"edited meanwhile");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_missing_directory_fails_without_a_trace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope/ring");
        assert!(matches!(
            replace(&path, None, b"new", None),
            Err(WriteError::Io {
                step: "creating",
                ..
            })
        ));
        assert!(!path.exists());
    }

    #[test]
    fn owner_is_kept_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring");
        let me = owner_of(dir.path()).unwrap().unwrap();
        replace(&path, None, b"x", Some(me)).unwrap();
        assert_eq!(owner_of(&path).unwrap(), Some(me));
        if me.uid == 0 {
            let nobody = Owner {
                uid: 65534,
                gid: 65534,
            };
            replace(&path, Some(b"x"), b"y", Some(nobody)).unwrap();
            assert_eq!(owner_of(&path).unwrap(), Some(nobody));
        }
    }

    #[test]
    fn resolves_numeric_and_named_owners() {
        assert_eq!(
            resolve_owner("998:997").unwrap(),
            Owner { uid: 998, gid: 997 }
        );
        assert_eq!(resolve_owner("root").unwrap(), Owner { uid: 0, gid: 0 });
        assert!(resolve_owner("no-such-user-here").is_err());
        assert!(
            resolve_owner("12").is_err(),
            "a bare uid has no group to take"
        );
    }
}
