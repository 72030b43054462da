//! `org.freedesktop.DBus.ObjectManager` at `/org/hiber/Hiber1`, answering
//! each caller with what it may see: its own snapshots (root: all) and
//! the jobs. zbus's own ObjectManager would hand every snapshot's
//! properties to anyone, so this one is hiberd's. `InterfacesAdded` for a
//! snapshot carries no properties: signals reach everybody, and a
//! snapshot's name and windows are its owner's business.

use crate::daemon::Daemon;
use crate::job::{JobObject, JOB_IFACE};
use crate::snapshot::{SnapshotObject, SNAPSHOT_IFACE};
use std::collections::HashMap;
use std::sync::Arc;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};
use zbus::{fdo, interface};

pub type Properties = HashMap<String, OwnedValue>;
pub type Interfaces = HashMap<String, Properties>;

#[derive(Debug)]
pub struct Objects {
    pub daemon: Arc<Daemon>,
}

#[interface(name = "org.freedesktop.DBus.ObjectManager")]
impl Objects {
    async fn get_managed_objects(
        &self,
        #[zbus(header)] hdr: Header<'_>,
    ) -> fdo::Result<HashMap<OwnedObjectPath, Interfaces>> {
        let d = &self.daemon;
        let caller = d
            .auth
            .caller(d.conn(), &hdr)
            .await
            .map_err(|e| e.into_fdo())?;
        d.sync_snapshots(caller.uid).await;
        let server = d.conn().object_server();
        let mut out = HashMap::new();
        for path in d.snapshots_of(caller.uid) {
            if let Ok(iface) = server.interface::<_, SnapshotObject>(&path).await {
                let props = iface.get().await.properties();
                out.insert(path, HashMap::from([(SNAPSHOT_IFACE.to_string(), props)]));
            }
        }
        for path in d.job_paths() {
            if let Ok(iface) = server.interface::<_, JobObject>(&path).await {
                let props = iface.get().await.properties();
                out.insert(path, HashMap::from([(JOB_IFACE.to_string(), props)]));
            }
        }
        Ok(out)
    }

    #[zbus(signal)]
    pub async fn interfaces_added(
        emitter: &SignalEmitter<'_>,
        object_path: ObjectPath<'_>,
        interfaces_and_properties: HashMap<String, Properties>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn interfaces_removed(
        emitter: &SignalEmitter<'_>,
        object_path: ObjectPath<'_>,
        interfaces: Vec<String>,
    ) -> zbus::Result<()>;
}

pub async fn snapshot_added(
    emitter: &SignalEmitter<'_>,
    path: &ObjectPath<'_>,
) -> zbus::Result<()> {
    let ifaces = HashMap::from([(SNAPSHOT_IFACE.to_string(), Properties::new())]);
    Objects::interfaces_added(emitter, path.clone(), ifaces).await
}

pub async fn interfaces_removed_snapshot(
    emitter: &SignalEmitter<'_>,
    path: &ObjectPath<'_>,
) -> zbus::Result<()> {
    Objects::interfaces_removed(emitter, path.clone(), vec![SNAPSHOT_IFACE.to_string()]).await
}
