//! Two ranks on two "hosts" over TCP, on one machine: `tools/netns-hosts.sh` makes two network
//! namespaces bridged to the root namespace, and `mpirun --hostfile` reaches them through an rsh
//! agent that enters the namespace instead of ssh. Shared memory is switched off (`btl self,tcp`),
//! so the ranks can only talk over the veth links, as they would across machines.
//!
//! Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN) for `ip netns add`; without it the test fails
//! with the script's message, it never skips. The namespaces are removed by a `Drop` guard, also
//! when an assertion fails.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One set of namespace hosts, made by `netns-hosts.sh up` and removed on drop.
struct Hosts {
    name: String,
    /// `10.231.X.0/24`: the only network the ranks and daemons may use.
    subnet: String,
    /// (address, namespace) per host, in hostfile order.
    hosts: Vec<(String, String)>,
    hostfile: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/netns-hosts.sh")
}

impl Hosts {
    /// `tag` keeps the names of tests running at once in this process apart.
    fn up(tag: char, dir: &Path) -> Hosts {
        let name = format!("d{}{tag}", std::process::id() % 10_000_000);
        let mut c = Command::new(script());
        c.args(["up", &name]);
        let out = run(c);
        // Made before the check, so a half-done `up` is cleaned up by the drop as well.
        let mut hosts = Hosts {
            name,
            subnet: String::new(),
            hosts: Vec::new(),
            hostfile: dir.join("hosts"),
        };
        assert!(
            out.status.success(),
            "`netns-hosts.sh up` failed ({}); this test needs root or CAP_SYS_ADMIN + CAP_NET_ADMIN:\n{}",
            out.status,
            text(&out.stderr)
        );
        for line in text(&out.stdout).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["subnet", cidr] => hosts.subnet = cidr.to_string(),
                ["host", addr, ns] => hosts.hosts.push((addr.to_string(), ns.to_string())),
                _ => panic!("unexpected line from `netns-hosts.sh up`: {line:?}"),
            }
        }
        assert!(
            !hosts.subnet.is_empty() && hosts.hosts.len() == 2,
            "{}",
            text(&out.stdout)
        );
        let lines: String = hosts
            .hosts
            .iter()
            .map(|(addr, _)| format!("{addr} slots=1\n"))
            .collect();
        std::fs::write(&hosts.hostfile, lines).unwrap();
        hosts
    }

    /// `timeout 300 mpirun -np 2 --hostfile ...` with every setting a TCP-only hostfile run
    /// needs: the agent instead of ssh, no tree spawn (the HNP starts both daemons), only the TCP
    /// and self transports, and both the MPI and the runtime traffic pinned to the subnet.
    fn mpirun(&self, program: &Path) -> Command {
        let agent = format!("{} agent", script().display());
        let mut c = command(Path::new("timeout"));
        c.args(["300", "mpirun", "-np", "2", "--hostfile"])
            .arg(&self.hostfile)
            .args(["--bind-to", "none", "-x", "TF_CPP_MIN_LOG_LEVEL"])
            .args(["--mca", "plm_rsh_agent", &agent])
            .args(["--mca", "plm_rsh_no_tree_spawn", "1"])
            .args(["--mca", "btl", "self,tcp"])
            .args(["--mca", "btl_tcp_if_include", &self.subnet])
            .args(["--mca", "oob_tcp_if_include", &self.subnet])
            .arg(program);
        c
    }

    /// Rank i runs in the namespace of hostfile line i: asked of each rank itself.
    fn assert_one_rank_per_namespace(&self) {
        let mut c = self.mpirun(Path::new("sh"));
        c.args([
            "-c",
            "echo rank=$OMPI_COMM_WORLD_RANK ns=$(ip netns identify $$) addr=$(hostname -I)",
        ]);
        let out = ok(c);
        let mut lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
        lines.sort();
        let expected: Vec<String> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(rank, (addr, ns))| format!("rank={rank} ns={ns} addr={addr}"))
            .collect();
        assert_eq!(lines, expected);
    }

    /// Bytes (host 1 sent, host 1 received, host 2 sent, host 2 received) on the veth links so
    /// far, read on their root-namespace ends (where a host's send is a receive).
    fn link_bytes(&self) -> [u64; 4] {
        let read = |i: usize, dir: &str| -> u64 {
            let path = format!("/sys/class/net/{}-v{i}/statistics/{dir}_bytes", self.name);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .trim()
                .parse()
                .unwrap()
        };
        [read(1, "rx"), read(1, "tx"), read(2, "rx"), read(2, "tx")]
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let out = Command::new(script()).args(["down", &self.name]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "netns-hosts.sh down {} failed: {}",
                self.name,
                text(&o.stderr)
            ),
            Err(e) => eprintln!("netns-hosts.sh down {}: {e}", self.name),
        }
    }
}

/// Each link carried at least `bytes` in each direction between `before` and `after`.
fn assert_each_link_carried(before: [u64; 4], after: [u64; 4], bytes: u64) {
    let moved: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert!(
        moved.iter().all(|&m| m >= bytes),
        "bytes on the veth links (h1 sent, h1 received, h2 sent, h2 received): {moved:?}, \
         expected at least {bytes} each"
    );
}

#[test]
fn ring_gradient_across_two_namespace_hosts_over_tcp_equals_the_definition() {
    let tmp = tempdir();
    let hosts = Hosts::up('g', tmp.path());
    hosts.assert_one_rank_per_namespace();

    let before = hosts.link_bytes();
    let mut c = hosts.mpirun(&bin("trainer"));
    c.args(["gradcheck", "--depth", "18", "--px", "32", "--batch", "4"]);
    let out = ok(c);
    let after = hosts.link_bytes();

    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["np"], 2);
    assert!(v["max_abs_grad"].as_f64().unwrap() > 1e-4, "{v}");
    assert!(v["relative_error"].as_f64().unwrap() < 1e-5, "{v}");
    // A 2-rank ring sends every rank's whole gradient across once; even fp16 on the wire is
    // 2 bytes per parameter. The other transport, shared memory, was switched off.
    let params = v["params"].as_u64().unwrap();
    assert_each_link_carried(before, after, 2 * params);
}

#[test]
fn training_across_two_namespace_hosts_over_tcp_keeps_identical_weights() {
    let tmp = tempdir();
    let sched = schedule(
        tmp.path(),
        "tiny",
        "  log_every_steps: 1\n",
        &[
            r#"{epoch: [0, 1], lr: [0.05, 0.1], lr_method: linear, batch_size: 8, image_size: 32, data_dir: "48"}"#,
        ],
    );
    let hosts = Hosts::up('t', tmp.path());
    hosts.assert_one_rank_per_namespace();

    let run_dir = tmp.path().join("run");
    let before = hosts.link_bytes();
    let mut c = hosts.mpirun(&bin("trainer"));
    c.arg(&sched)
        .arg("--run-dir")
        .arg(&run_dir)
        .args(["--max-steps", "3"]);
    let out = ok(c);
    let after = hosts.link_bytes();

    let log = text(&out.stderr);
    assert!(log.contains("all 2 ranks hold identical weights"), "{log}");
    assert!(log.contains("batch 8/rank x 2 = 16"), "{log}");
    assert_eq!(metrics(&run_dir).last().unwrap()["global_batch"], 16);
    // Three all-reduced steps of ResNet-18 (11.2M parameters) plus the initial broadcast: far
    // more than 10 MB each way on each link.
    assert_each_link_carried(before, after, 10_000_000);
}
