//! Schema migrations. Each entry runs once, in order, recorded in `PRAGMA user_version`.

use rusqlite::Connection;

/// The migrations, oldest first. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: operation journal and event log.
    "CREATE TABLE operations (
        id          TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        status      TEXT NOT NULL,
        input       TEXT NOT NULL,
        error       TEXT,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
     );
     CREATE INDEX operations_status ON operations(status);
     CREATE TABLE operation_steps (
        op_id      TEXT NOT NULL REFERENCES operations(id) ON DELETE CASCADE,
        seq        INTEGER NOT NULL,
        name       TEXT NOT NULL,
        status     TEXT NOT NULL,
        data       TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (op_id, seq)
     );
     CREATE TABLE events (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        time          TEXT NOT NULL,
        kind          TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        resource_id   TEXT NOT NULL,
        data          TEXT NOT NULL
     );
     CREATE TABLE settings (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at TEXT NOT NULL
     );",
    // 2: images and servers.
    "CREATE TABLE images (
        id               TEXT PRIMARY KEY,
        name             TEXT NOT NULL,
        status           TEXT NOT NULL,
        disk_format      TEXT NOT NULL,
        container_format TEXT NOT NULL,
        properties       TEXT NOT NULL,
        checksum         TEXT,
        size             INTEGER,
        virtual_size     INTEGER,
        stored_format    TEXT,
        blob             TEXT,
        error            TEXT,
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL
     );
     CREATE INDEX images_blob ON images(blob);
     CREATE TABLE servers (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        status      TEXT NOT NULL,
        task_state  TEXT,
        image_id    TEXT NOT NULL,
        spec        TEXT NOT NULL,
        fault       TEXT,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
     );
     CREATE INDEX servers_image ON servers(image_id);",
    // 3: networks, subnets, ports and their addresses.
    "CREATE TABLE networks (
        id               TEXT PRIMARY KEY,
        name             TEXT NOT NULL,
        network_type     TEXT NOT NULL,
        physical_network TEXT,
        segmentation_id  INTEGER,
        mtu              INTEGER NOT NULL,
        backend          TEXT NOT NULL,
        bridge           TEXT,
        status           TEXT NOT NULL,
        fault            TEXT,
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL
     );
     CREATE UNIQUE INDEX networks_segment
        ON networks(network_type, COALESCE(physical_network, ''), COALESCE(segmentation_id, -1))
        WHERE network_type IN ('vlan', 'vxlan', 'flat');
     CREATE TABLE subnets (
        id               TEXT PRIMARY KEY,
        network_id       TEXT NOT NULL REFERENCES networks(id),
        name             TEXT NOT NULL,
        cidr             TEXT NOT NULL,
        gateway_ip       TEXT,
        allocation_pools TEXT NOT NULL,
        dns_nameservers  TEXT NOT NULL,
        host_routes      TEXT NOT NULL,
        enable_dhcp      INTEGER NOT NULL,
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL
     );
     CREATE INDEX subnets_network ON subnets(network_id);
     CREATE TABLE ports (
        id           TEXT PRIMARY KEY,
        network_id   TEXT NOT NULL REFERENCES networks(id),
        name         TEXT NOT NULL,
        mac_address  TEXT NOT NULL UNIQUE,
        device_id    TEXT NOT NULL,
        device_owner TEXT NOT NULL,
        status       TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL
     );
     CREATE INDEX ports_network ON ports(network_id);
     CREATE INDEX ports_device ON ports(device_id);
     CREATE TABLE ip_allocations (
        subnet_id  TEXT NOT NULL REFERENCES subnets(id),
        ip_address TEXT NOT NULL,
        port_id    TEXT NOT NULL REFERENCES ports(id) ON DELETE CASCADE,
        PRIMARY KEY (subnet_id, ip_address)
     );
     CREATE INDEX ip_allocations_port ON ip_allocations(port_id);
     CREATE TABLE instance_passwords (
        server_id  TEXT PRIMARY KEY,
        password   TEXT NOT NULL,
        created_at TEXT NOT NULL
     );",
    // 4: volume types, volumes and snapshots. Each row keeps its record as JSON (`doc`) next
    //    to the columns queries filter on.
    "CREATE TABLE volume_types (
        id    TEXT PRIMARY KEY,
        name  TEXT NOT NULL UNIQUE,
        doc   TEXT NOT NULL
     );
     CREATE TABLE volumes (
        id          TEXT PRIMARY KEY,
        volume_type TEXT NOT NULL,
        attached_to TEXT,
        created_at  TEXT NOT NULL,
        doc         TEXT NOT NULL
     );
     CREATE INDEX volumes_type ON volumes(volume_type);
     CREATE INDEX volumes_attached ON volumes(attached_to);
     CREATE TABLE snapshots (
        id          TEXT PRIMARY KEY,
        volume_id   TEXT NOT NULL REFERENCES volumes(id),
        created_at  TEXT NOT NULL,
        doc         TEXT NOT NULL
     );
     CREATE INDEX snapshots_volume ON snapshots(volume_id);",
    // 5: security groups, their rules (the record as JSON, plus the columns references need),
    //    the groups of each port, and port security + allowed address pairs on ports. The
    //    `default` group itself is created by `Store::open` (it needs a fresh UUID).
    "CREATE TABLE security_groups (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
     );
     CREATE TABLE security_group_rules (
        id                TEXT PRIMARY KEY,
        security_group_id TEXT NOT NULL REFERENCES security_groups(id) ON DELETE CASCADE,
        remote_group_id   TEXT REFERENCES security_groups(id) ON DELETE CASCADE,
        created_at        TEXT NOT NULL,
        doc               TEXT NOT NULL
     );
     CREATE INDEX security_group_rules_group ON security_group_rules(security_group_id);
     CREATE INDEX security_group_rules_remote ON security_group_rules(remote_group_id);
     CREATE TABLE port_security_groups (
        port_id           TEXT NOT NULL REFERENCES ports(id) ON DELETE CASCADE,
        security_group_id TEXT NOT NULL REFERENCES security_groups(id),
        position          INTEGER NOT NULL,
        PRIMARY KEY (port_id, security_group_id)
     );
     CREATE INDEX port_security_groups_group ON port_security_groups(security_group_id);
     ALTER TABLE ports ADD COLUMN port_security_enabled INTEGER NOT NULL DEFAULT 1;
     ALTER TABLE ports ADD COLUMN allowed_address_pairs TEXT NOT NULL DEFAULT '[]';",
    // 6: the body fingerprint of each create that chose its own id, so a repeat is recognised
    //    (same body → the existing resource) and a reuse refused (different body → 409).
    "CREATE TABLE create_requests (
        kind        TEXT NOT NULL,
        id          TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (kind, id)
     );",
    // 7: servers that moved to another node (live or cold migration): `GET` here points there.
    "CREATE TABLE moved_servers (
        id       TEXT PRIMARY KEY,
        name     TEXT NOT NULL,
        node     TEXT NOT NULL,
        api_url  TEXT NOT NULL,
        moved_at TEXT NOT NULL
     );",
];

/// Applies every migration the database has not seen yet, each in its own transaction.
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
