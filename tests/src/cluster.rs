//! A Redis Cluster of masters on loopback, each node a [`RedisServer`] of its own.
//!
//! [`Cluster::start`] splits the 16384 slots into even ranges, one per node, joins the nodes
//! with `CLUSTER MEET` and waits, with a deadline, until every node reports `cluster_state:ok`
//! and knows every other. [`Cluster::add_replica`] joins a replica of one master. The nodes
//! stop when the cluster is dropped.

use std::thread;
use std::time::{Duration, Instant};

use crate::server::{RedisServer, ServerOptions};
use crate::Client;

/// How many hash slots a cluster has.
pub const SLOTS: u16 = 16384;
const FORM_DEADLINE: Duration = Duration::from_secs(30);

pub struct Cluster {
    /// The masters the slots were first given to, in slot order.
    nodes: Vec<RedisServer>,
    /// The first slot of each node's range, in node order; each range ends where the next
    /// begins.
    starts: Vec<u16>,
    replicas: Vec<RedisServer>,
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
        let cluster = Cluster {
            nodes,
            starts,
            replicas: Vec::new(),
        };
        cluster.wait_formed();
        cluster
    }

    fn wait_formed(&self) {
        let known = format!(
            "cluster_known_nodes:{}",
            self.nodes.len() + self.replicas.len()
        );
        let formed = wait_until(|| {
            self.nodes.iter().chain(&self.replicas).all(|node| {
                let info = node.client().text(&["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains(&known)
            })
        });
        assert!(formed, "the cluster did not form in time");
    }

    /// Starts a node with `options`, joins it to the cluster as a replica of the master at
    /// `master` (an index into [`Cluster::nodes`]), and waits until its link to the master is
    /// up and every node knows it.
    pub fn add_replica(&mut self, master: usize, options: ServerOptions) -> &RedisServer {
        let replica = options.cluster_node().start();
        let bus = replica.client().config_get("cluster-port");
        let port = replica.port().to_string();
        self.nodes[0]
            .client()
            .ok(&["CLUSTER", "MEET", "127.0.0.1", &port, &bus]);
        let master_id = self.nodes[master].client().text(&["CLUSTER", "MYID"]);
        self.replicas.push(replica);
        self.wait_formed();
        let Some(replica) = self.replicas.last() else {
            unreachable!("a replica was just added");
        };
        // The replica must have learned the master's ID before it can follow it.
        let mut client = replica.client();
        let following = wait_until(|| client.call(&["CLUSTER", "REPLICATE", &master_id]).is_ok());
        assert!(following, "the replica never accepted its master");
        let synced = wait_until(|| {
            client
                .text(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        assert!(synced, "the replica never synchronised with its master");
        replica
    }

    /// The replicas added with [`Cluster::add_replica`], in the order they were added.
    pub fn replicas(&self) -> &[RedisServer] {
        &self.replicas
    }

    /// Kills the master at `index` with SIGKILL, as a crash would. Its slots stay unserved
    /// until a replica takes them over.
    pub fn crash_master(&mut self, index: usize) {
        self.nodes[index].crash();
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node first given the slot of `key`.
    pub fn owner_of(&self, key: &str) -> &RedisServer {
        &self.nodes[self.owner_index(key)]
    }

    /// Some node that does not serve the slot of `key`.
    pub fn other_than_owner_of(&self, key: &str) -> &RedisServer {
        let owner = self.owner_index(key);
        &self.nodes[(owner + 1) % self.nodes.len()]
    }

    /// The slot of `key`, as the cluster computes it.
    pub fn slot_of(&self, key: &str) -> u16 {
        let Some(node) = self
            .nodes
            .iter()
            .chain(&self.replicas)
            .find(|n| n.is_alive())
        else {
            panic!("no node of the cluster is running");
        };
        let slot = node.client().int(&["CLUSTER", "KEYSLOT", key]);
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

    /// A plain connection to the node serving `key` now, after any failover: the live node
    /// that answers a read of `key` rather than redirecting it. `None` while no node serves it.
    pub fn serving(&self, key: &str) -> Option<Client> {
        self.nodes
            .iter()
            .chain(&self.replicas)
            .filter(|node| node.is_alive())
            .map(RedisServer::client)
            .find_map(|mut client| client.call(&["EXISTS", key]).is_ok().then_some(client))
    }

    /// The index in [`Cluster::nodes`] of the master first given the slot of `key`.
    pub fn owner_index(&self, key: &str) -> usize {
        let slot = self.slot_of(key);
        self.starts
            .iter()
            .rposition(|&start| start <= slot)
            .unwrap_or(0)
    }

    /// A plain connection to the node serving `key` when the cluster formed.
    pub fn client_for(&self, key: &str) -> Client {
        self.owner_of(key).client()
    }
}

/// Polls `done` until it holds, or gives false once the formation deadline has passed.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + FORM_DEADLINE;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}
