//! A Redis Cluster of masters on loopback, each node a [`RedisServer`] of its own.
//!
//! [`Cluster::start`] splits the 16384 slots into even ranges, one per node, joins the nodes
//! with `CLUSTER MEET` and waits, with a deadline, until every node reports `cluster_state:ok`
//! and knows every other. The nodes stop when the cluster is dropped.

use std::thread;
use std::time::{Duration, Instant};

use crate::server::{RedisServer, ServerOptions};
use crate::Client;

/// How many hash slots a cluster has.
pub const SLOTS: u16 = 16384;
const FORM_DEADLINE: Duration = Duration::from_secs(30);

pub struct Cluster {
    nodes: Vec<RedisServer>,
    /// The first slot of each node's range, in node order; each range ends where the next
    /// begins.
    starts: Vec<u16>,
}

impl Cluster {
    /// Starts `masters` nodes, each with the options `node` returns (called once per node, so
    /// that each runs in its own directory), and forms the cluster.
    pub fn start(masters: usize, node: impl Fn() -> ServerOptions) -> Cluster {
        assert!(
            (1..=usize::from(SLOTS)).contains(&masters),
            "no such cluster"
        );
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| node().cluster_node().start())
            .collect();
        let count = masters as u32;
        let starts: Vec<u16> = (0..count)
            .map(|i| (u32::from(SLOTS) * i / count) as u16)
            .collect();
        for (i, server) in nodes.iter().enumerate() {
            let first = starts[i];
            let last = starts.get(i + 1).copied().unwrap_or(SLOTS) - 1;
            server.client().ok(&[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &first.to_string(),
                &last.to_string(),
            ]);
        }
        let mut first = nodes[0].client();
        for other in &nodes[1..] {
            let bus = other.client().config_get("cluster-port");
            let port = other.port().to_string();
            first.ok(&["CLUSTER", "MEET", "127.0.0.1", &port, &bus]);
        }
        let cluster = Cluster { nodes, starts };
        cluster.wait_formed();
        cluster
    }

    fn wait_formed(&self) {
        let until = Instant::now() + FORM_DEADLINE;
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        loop {
            let formed = self.nodes.iter().all(|node| {
                let info = node.client().text(&["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains(&known)
            });
            if formed {
                return;
            }
            assert!(Instant::now() < until, "the cluster did not form in time");
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node serving the slot of `key`.
    pub fn owner_of(&self, key: &str) -> &RedisServer {
        &self.nodes[self.owner_index(key)]
    }

    /// Some node that does not serve the slot of `key`.
    pub fn other_than_owner_of(&self, key: &str) -> &RedisServer {
        let owner = self.owner_index(key);
        &self.nodes[(owner + 1) % self.nodes.len()]
    }

    fn owner_index(&self, key: &str) -> usize {
        let slot = self.slot_of(key);
        self.starts
            .iter()
            .rposition(|&start| start <= slot)
            .unwrap_or(0)
    }

    /// The slot of `key`, as the cluster computes it.
    pub fn slot_of(&self, key: &str) -> u16 {
        let slot = self.nodes[0].client().int(&["CLUSTER", "KEYSLOT", key]);
        u16::try_from(slot).expect("a slot number")
    }

    /// The seed list a cluster client is given: every node's URL, comma-separated.
    pub fn urls(&self, userinfo: &str) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("redis://{userinfo}127.0.0.1:{}/", node.port()))
            .collect();
        urls.join(",")
    }

    /// A plain connection to the node serving `key`.
    pub fn client_for(&self, key: &str) -> Client {
        self.owner_of(key).client()
    }
}
