//! The data directory's identity: a random id written once into `<data dir>/meta.properties`
//! (Kafka's file and key, `directory.id`, in Kafka's 22-character URL-safe base64 form).
//!
//! Why: Raft counts on a voter never forgetting what it acknowledged. A node whose directory
//! was wiped (a replaced disk, an operator's `rm -rf`) and that comes back under the same
//! node id would be counted by its peers' leaders as holding entries it no longer has (a
//! quorum that is not one), and raft-rs panics when a leader tells such a follower of a
//! commit index past its empty log. With an id per directory, registered with the
//! controller, peers recognise the newcomer as another directory and refuse it (the rpc
//! crate's header has the handshake), and the controller refuses its registration.
//!
//! A directory without the file gets one at its first start with this build, whatever it
//! holds (an upgrade in place keeps its data; its registration then records the id). The
//! file is written to a temporary name, synced and renamed, so a crash leaves either no
//! file or a whole one; a file that exists but does not parse stops the start (a new id
//! would make the cluster refuse the node for good).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

pub use sluice_rpc::frame::{uuid_from_base64, uuid_to_base64};

/// The file's name in the data directory.
pub const META_PROPERTIES: &str = "meta.properties";
/// The key of the directory id.
pub const DIRECTORY_ID_KEY: &str = "directory.id";
/// This data directory's id: read from `meta.properties`, or drawn and written there if the
/// file does not exist. Never all zeros (zeros mean "unknown" on the wire).
pub fn directory_id(data_dir: &Path) -> io::Result<[u8; 16]> {
    let path = data_dir.join(META_PROPERTIES);
    match fs::read_to_string(&path) {
        Ok(text) => parse(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: no valid {DIRECTORY_ID_KEY} (the file is damaged; restore it, since \
                     a new id would make the cluster refuse this node)",
                    path.display()
                ),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = loop {
                let id: [u8; 16] = rand::random();
                if id != [0; 16] {
                    break id;
                }
            };
            write(data_dir, &id)?;
            log::info!(
                "{}: new data directory id {}",
                path.display(),
                uuid_to_base64(&id)
            );
            Ok(id)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("read {}: {e}", path.display()),
        )),
    }
}

fn parse(text: &str) -> Option<[u8; 16]> {
    let value = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(DIRECTORY_ID_KEY)?
                .trim_start()
                .strip_prefix('=')
        })?;
    uuid_from_base64(value.trim()).filter(|id| *id != [0; 16])
}

fn write(data_dir: &Path, id: &[u8; 16]) -> io::Result<()> {
    let ctx = |what: &str, p: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
    };
    fs::create_dir_all(data_dir).map_err(|e| ctx("create", data_dir, e))?;
    let path = data_dir.join(META_PROPERTIES);
    let tmp = data_dir.join(format!("{META_PROPERTIES}.tmp"));
    let body = format!(
        "# sluice: this data directory's identity, written once. A node with another\n\
         # directory.id than the one it registered is refused by its cluster.\n\
         version=1\n{DIRECTORY_ID_KEY}={}\n",
        uuid_to_base64(id)
    );
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| ctx("create", &tmp, e))?;
    f.write_all(body.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| ctx("write", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| ctx("rename", &tmp, e))?;
    File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ctx("sync", data_dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_written_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let id = directory_id(&data).unwrap();
        assert_ne!(id, [0; 16]);
        assert_eq!(directory_id(&data).unwrap(), id);
        assert!(!data.join("meta.properties.tmp").exists());
        // A damaged file stops the start rather than drawing a new id.
        fs::write(data.join(META_PROPERTIES), "directory.id=nope\n").unwrap();
        assert!(directory_id(&data).is_err());
        fs::write(
            data.join(META_PROPERTIES),
            format!("# x\nversion=1\ndirectory.id = {}\n", uuid_to_base64(&id)),
        )
        .unwrap();
        assert_eq!(directory_id(&data).unwrap(), id);
        // A wiped directory gets another.
        fs::remove_dir_all(&data).unwrap();
        assert_ne!(directory_id(&data).unwrap(), id);
    }
}
