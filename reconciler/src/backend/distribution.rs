//! The distributed-training contract every compute target gives a job with several
//! instances: the PyTorch variables that Kubeflow's PyTorchJob and Azure ML's
//! `distribution: pytorch` set, plus torchrun's `PET_*` ones, so that a bare
//! `torchrun train.py` finds its peers with no rendezvous flags.
//!
//! | variable | value |
//! |---|---|
//! | `MASTER_ADDR`, `PET_MASTER_ADDR` | where instance 0 listens |
//! | `MASTER_PORT`, `PET_MASTER_PORT` | its port |
//! | `WORLD_SIZE`, `PET_NNODES` | the number of instances |
//! | `RANK`, `NODE_RANK`, `PET_NODE_RANK` | this instance's index, 0 to N−1 |
//! | `PET_NPROC_PER_NODE` | the job's `gpus` per instance, or 1 without GPUs |
//!
//! Instance 0 is the master, and the one whose outputs are stored. A target that knows
//! the rank when it starts a process uses [`Distribution::env`]; one that learns it
//! later (a Kubernetes Indexed Job's completion index) uses [`Distribution::shared_env`]
//! and sets each of [`RANK_VARIABLES`] from the index itself.

/// The port instance 0 listens on when the target has no reason to pick another:
/// torchrun's default.
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// The variables that carry an instance's index.
pub const RANK_VARIABLES: [&str; 3] = ["RANK", "NODE_RANK", "PET_NODE_RANK"];

/// One job's group of instances, as its processes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    /// Instances (nodes); each runs the job's command once.
    pub instances: u32,
    /// Worker processes torchrun starts per instance: the GPUs per instance, or 1.
    pub procs_per_instance: u32,
    /// Where instance 0 listens, as the other instances can reach it.
    pub master_addr: String,
    pub master_port: u16,
}

impl Distribution {
    /// The group for a job with `instances` instances of `gpus` GPUs each.
    pub fn new(
        instances: u32,
        gpus: u32,
        master_addr: impl Into<String>,
        master_port: u16,
    ) -> Self {
        Distribution {
            instances: instances.max(1),
            procs_per_instance: gpus.max(1),
            master_addr: master_addr.into(),
            master_port,
        }
    }

    /// The variables every instance gets, whatever its rank.
    pub fn shared_env(&self) -> Vec<(&'static str, String)> {
        let (addr, port) = (self.master_addr.clone(), self.master_port.to_string());
        vec![
            ("MASTER_ADDR", addr.clone()),
            ("MASTER_PORT", port.clone()),
            ("WORLD_SIZE", self.instances.to_string()),
            ("PET_NNODES", self.instances.to_string()),
            ("PET_NPROC_PER_NODE", self.procs_per_instance.to_string()),
            ("PET_MASTER_ADDR", addr),
            ("PET_MASTER_PORT", port),
        ]
    }

    /// Every variable instance `rank` gets.
    pub fn env(&self, rank: u32) -> Vec<(&'static str, String)> {
        let mut env = self.shared_env();
        env.extend(RANK_VARIABLES.iter().map(|name| (*name, rank.to_string())));
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instance_gets_the_group_and_its_own_rank() {
        let group = Distribution::new(2, 4, "train-0.train", DEFAULT_MASTER_PORT);
        let env: std::collections::BTreeMap<_, _> = group.env(1).into_iter().collect();
        assert_eq!(env["MASTER_ADDR"], "train-0.train");
        assert_eq!(env["PET_MASTER_PORT"], "29500");
        assert_eq!(env["WORLD_SIZE"], "2");
        assert_eq!(env["PET_NNODES"], "2");
        assert_eq!(env["PET_NPROC_PER_NODE"], "4");
        for name in RANK_VARIABLES {
            assert_eq!(env[name], "1");
        }
        assert_eq!(env.len(), 10);
    }

    #[test]
    fn one_process_per_instance_without_gpus() {
        let group = Distribution::new(3, 0, "127.0.0.1", 40001);
        assert_eq!(group.procs_per_instance, 1);
        assert!(!group.shared_env().iter().any(|(name, _)| *name == "RANK"));
    }
}
