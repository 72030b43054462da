//! A restored session goes to its user, out of hiberd's cgroup: when
//! systemd runs, into a transient scope in the user's slice
//! (`StartTransientUnit`). Without systemd there is no unit to leave; the
//! session keeper, detached from hiberd by the restore helper, holds it.

use hiber_session::system_store::RestoreOutcome;
use tracing::{info, warn};
use zbus::zvariant::Value;
use zbus::Connection;

const SYSTEMD: &str = "org.freedesktop.systemd1";

pub async fn hand_over(conn: &Connection, r: &RestoreOutcome) {
    let has_systemd = match zbus::fdo::DBusProxy::new(conn).await {
        Ok(dbus) => dbus
            .name_has_owner(SYSTEMD.try_into().expect("a valid name"))
            .await
            .unwrap_or(false),
        Err(_) => false,
    };
    if !has_systemd {
        info!(keeper = ?r.keeper, "no systemd on the bus: the session keeper holds the restored session");
        return;
    }
    let uid = r
        .pids
        .first()
        .and_then(|p| std::fs::metadata(format!("/proc/{p}")).ok())
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    let Some(uid) = uid else { return };
    let pids: Vec<u32> = r.keeper.iter().chain(&r.pids).map(|&p| p as u32).collect();
    let unit = format!("hiber-session-{}-{}.scope", r.display, pids[0]);
    let props: Vec<(&str, Value<'_>)> = vec![
        ("Description", Value::from("a session restored by Hiber")),
        ("Slice", Value::from(format!("user-{uid}.slice"))),
        ("PIDs", Value::from(pids)),
    ];
    let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
    let called = conn
        .call_method(
            Some(SYSTEMD),
            "/org/freedesktop/systemd1",
            Some("org.freedesktop.systemd1.Manager"),
            "StartTransientUnit",
            &(unit.as_str(), "fail", props, aux),
        )
        .await;
    match called {
        Ok(_) => info!(unit, uid, "the restored session has its own scope"),
        Err(error) => warn!(unit, %error, "could not move the restored session to a scope"),
    }
}
