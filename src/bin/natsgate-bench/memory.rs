//! Memory per idle authenticated connection, on fresh processes per
//! configuration: nats-server (direct clients), the relay and natsgate, and
//! the nats-server behind each.

use std::path::Path;
use std::time::Duration;

use crate::procs::{self, NatsServer};
use crate::setup;
use crate::table::{CONFIGS, Config, Row, Target};
use crate::{client, load};

/// The rows "memory/idle conn" (the process clients connect to) and
/// "memory upstream/idle conn" (the nats-server behind it; for direct, the
/// same process), with `clients` idle clients per configuration.
pub fn rows(
    clients: usize,
    server_bin: &Path,
    gate_bin: Option<&Path>,
    ids: &setup::Identities,
) -> Result<[Row; 2], String> {
    let mut own = Row::new(
        format!("memory/idle conn @{clients}"),
        "KiB",
        Target::AbsMax(12.0),
    );
    let mut upstream = Row::new("memory upstream/idle conn", "KiB", Target::Info);
    if clients == 0 {
        return Ok([own, upstream]);
    }
    let need = fds_needed(clients);
    let dir = procs::ScratchDir::new().map_err(|e| format!("scratch dir: {e}"))?;
    for c in CONFIGS {
        // A fresh nats-server each time: Go keeps the heap of closed
        // connections, so a reused one would hide the upstream's growth.
        let server = NatsServer::start(
            server_bin,
            dir.path(),
            &format!("memory-{c:?}"),
            &setup::plain_server_config(),
        )?;
        let front = match c {
            Config::Direct => None,
            Config::Relay => Some(procs::start_relay(server.addr)?),
            Config::Gate => {
                let config = setup::write_gate_config(
                    &dir.path().join(format!("gate-{c:?}")),
                    ids,
                    server.addr,
                )
                .map_err(|e| format!("natsgate config: {e}"))?;
                Some(procs::start_natsgate(gate_bin, &config)?)
            }
        };
        let (addr, auth, pid) = match (&front, c) {
            (None, _) => (server.addr, setup::gate_auth(), server.pid()),
            (Some(p), Config::Gate) => (p.addr, ids.user.clone(), p.pid()),
            (Some(p), _) => (p.addr, setup::gate_auth(), p.pid()),
        };
        for (who, pid) in [("", pid), (" upstream", server.pid())] {
            if let Some(limit) = procs::nofile_limit_of(pid)
                && limit < need
            {
                eprintln!(
                    "  note: the{who} process of {c:?} may open only {limit} files \
                     ({clients} clients need about {need})"
                );
            }
        }
        let first = client::Client::connect(addr, &auth, client::SMALL_BUFFER)
            .map_err(|e| format!("memory via {c:?}: {e}"))?;
        std::thread::sleep(Duration::from_millis(300));
        let before = (procs::rss_of(pid), procs::rss_of(server.pid()));
        let idle = load::open_idle(addr, &auth, clients, 4)
            .map_err(|e| format!("memory via {c:?}: {e}"))?;
        std::thread::sleep(Duration::from_millis(1000));
        let after = (procs::rss_of(pid), procs::rss_of(server.pid()));
        let per = |b: u64, a: u64| a.saturating_sub(b) as f64 / clients as f64 / 1024.0;
        let mib = |v: u64| v as f64 / 1048576.0;
        let (own_per, up_per) = (per(before.0, after.0), per(before.1, after.1));
        print!(
            "  memory {c:?}: RSS {:.1} MiB -> {:.1} MiB with {clients} clients, \
             {own_per:.1} KiB each",
            mib(before.0),
            mib(after.0),
        );
        if front.is_some() {
            print!(
                "; upstream nats-server {:.1} MiB -> {:.1} MiB, {up_per:.1} KiB each",
                mib(before.1),
                mib(after.1)
            );
        }
        println!();
        own.push(c, own_per);
        upstream.push(c, up_per);
        for cl in idle {
            cl.close_now();
        }
        first.close_now();
        // Drops the front process, then the server.
        drop(front);
        drop(server);
    }
    Ok([own, upstream])
}

/// Open files the processes need for `clients` idle clients: natsgate and
/// the relay hold two per client (client and upstream socket).
pub fn fds_needed(clients: usize) -> u64 {
    clients as u64 * 2 + 200
}
