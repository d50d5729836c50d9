//! `RedisCluster`: six real `redis-server` nodes formed into a cluster of
//! three primaries with one replica each, by `redis-cli --cluster create`,
//! as deploy/cluster does. Every node has the service's ACL user (see
//! [`RedisServer`]). Nodes are killed when the cluster is dropped.

use std::time::Duration;

use super::{RedisServer, ServerTls, eventually_ok_blocking, run_with_timeout, slots::slot_ranges};

const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// A running six-node cluster; see the module docs.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    tls: Option<ServerTls>,
}

impl RedisCluster {
    /// Starts six nodes, forms the cluster and waits until every node reports
    /// `cluster_state:ok` and every replica is in sync with its primary.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// The same with TLS only: clients, cluster bus and replication links.
    pub fn start_tls(tls: ServerTls) -> Self {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<ServerTls>) -> Self {
        let node = || match &tls {
            Some(tls) => RedisServer::builder().cluster_node().tls(tls.clone()),
            None => RedisServer::builder().cluster_node(),
        };
        let nodes: Vec<RedisServer> = (0..6).map(|_| node().start()).collect();
        // As the `default` user of the first node: redis-cli logs in to every node with it.
        let mut create = nodes[0].redis_cli();
        create
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(RedisServer::addr))
            .args(["--cluster-replicas", "1", "--cluster-yes"]);
        let output = run_with_timeout(&mut create, FORM_TIMEOUT);
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}",
            output.combined()
        );
        let cluster = RedisCluster { nodes, tls };
        cluster.wait_until_healthy();
        // A replica's link is up before its primary lists it as online (the
        // initial sync still running): tests that WAIT for, partition or
        // promote a replica need it online, so a new cluster starts so.
        for primary in cluster.primaries() {
            super::replication::online_replica(primary);
        }
        cluster
    }

    /// `REDIS_CLUSTER_NODES` naming every node (as `rediss://` URLs with TLS).
    pub fn seed_nodes(&self) -> String {
        self.nodes
            .iter()
            .map(|node| match node.tls() {
                Some(_) => node.url(),
                None => node.addr(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every live node, primaries and replicas.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Asserts that the cluster has three primaries and each holds a user
    /// (keys spread over every shard).
    pub fn assert_users_on_every_primary(&self) {
        let primaries = self.primaries();
        assert_eq!(primaries.len(), 3);
        for primary in primaries {
            assert!(
                !primary.keys("user:*").is_empty(),
                "primary {} holds no user",
                primary.addr()
            );
        }
    }

    /// The nodes that are primaries now.
    pub fn primaries(&self) -> Vec<&RedisServer> {
        self.nodes
            .iter()
            .filter(|node| {
                node.query::<String>(&["INFO", "replication"])
                    .contains("role:master")
            })
            .collect()
    }

    /// The live node listening on `port`.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|node| node.port() == port)
            .unwrap_or_else(|| panic!("no live cluster node on port {port}"))
    }

    /// The primary that holds `key`, from `CLUSTER KEYSLOT` and `CLUSTER SLOTS`.
    pub fn primary_for(&self, key: &str) -> &RedisServer {
        let any = &self.nodes[0];
        let slot: i64 = any.query(&["CLUSTER", "KEYSLOT", key]);
        let port = slot_ranges(any)
            .into_iter()
            .find_map(|(start, end, port)| (start..=end).contains(&slot).then_some(port))
            .unwrap_or_else(|| panic!("no primary serves slot {slot} of {key}"));
        self.nodes
            .iter()
            .find(|node| i64::from(node.port()) == port)
            .unwrap_or_else(|| panic!("slot {slot} is served by unknown port {port}"))
    }

    /// Kills (SIGKILL) the node on `port`; its replica should take over.
    pub fn kill(&mut self, port: u16) {
        self.nodes.retain(|node| node.port() != port);
    }

    /// Like [`kill`](Self::kill), but first saves the node's `nodes.conf`
    /// (its identity in the cluster) for [`restart`](Self::restart).
    pub fn kill_keeping_identity(&mut self, port: u16) -> tempfile::TempDir {
        let saved = tempfile::Builder::new()
            .prefix("cluster-node-")
            .tempdir()
            .expect("create a temp dir for nodes.conf");
        std::fs::copy(
            self.node(port).path("nodes.conf"),
            saved.path().join("nodes.conf"),
        )
        .expect("copy nodes.conf");
        self.kill(port);
        saved
    }

    /// Starts a killed node again on its port with the identity saved by
    /// [`kill_keeping_identity`](Self::kill_keeping_identity); it rejoins
    /// the cluster (as a replica, once its replica has taken over).
    pub fn restart(&mut self, port: u16, identity: &tempfile::TempDir) {
        let mut node = RedisServer::builder()
            .port(port)
            .cluster_node()
            .durable_in(identity.path());
        if let Some(tls) = &self.tls {
            node = node.tls(tls.clone());
        }
        let node = node.start();
        self.nodes.push(node);
    }

    /// Waits until every live node reports `cluster_state:ok` and every
    /// replica has a live link to its primary.
    pub fn wait_until_healthy(&self) {
        eventually_ok_blocking(FORM_TIMEOUT, "every cluster node is healthy", || {
            let unhealthy: Vec<String> = self
                .nodes
                .iter()
                .filter_map(|node| {
                    let info: String = node.query(&["CLUSTER", "INFO"]);
                    let replication: String = node.query(&["INFO", "replication"]);
                    let ok = info.contains("cluster_state:ok")
                        && (replication.contains("role:master")
                            || replication.contains("master_link_status:up"));
                    (!ok).then(|| format!("{}:\n{info}\n{replication}", node.addr()))
                })
                .collect();
            if unhealthy.is_empty() {
                Ok(())
            } else {
                Err(unhealthy)
            }
        });
    }
}
