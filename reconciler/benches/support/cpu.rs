//! CPU time and context switches of the parts of a bench, read from `/proc` (Linux): the
//! threads of this process whose names start with a prefix, or whole processes by pid.
//! `schedstat` gives the time on CPU in nanoseconds; `status` the voluntary and
//! involuntary context switches.

use std::path::Path;

/// What a set of threads used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu_ns: u64,
    pub switches: u64,
}

impl Usage {
    /// What was used between `before` and `self`.
    pub fn since(self, before: Usage) -> Usage {
        Usage {
            cpu_ns: self.cpu_ns.saturating_sub(before.cpu_ns),
            switches: self.switches.saturating_sub(before.switches),
        }
    }

    /// Microseconds of CPU per request.
    pub fn us_per(self, requests: u64) -> f64 {
        self.cpu_ns as f64 / 1e3 / requests.max(1) as f64
    }

    /// Context switches per request.
    pub fn switches_per(self, requests: u64) -> f64 {
        self.switches as f64 / requests.max(1) as f64
    }
}

/// Which threads to count.
#[derive(Debug, Clone)]
pub enum Part {
    /// This process's threads whose name starts with the prefix.
    Threads(&'static str),
    /// Every thread of these processes (and of their children, read when measured).
    Processes(Vec<u32>),
}

impl Part {
    /// What the part's threads used so far (threads that ended are not counted: measure
    /// parts whose threads outlive the measurement).
    pub fn usage(&self) -> Usage {
        match self {
            Part::Threads(prefix) => tasks(Path::new("/proc/self/task"))
                .into_iter()
                .filter(|task| {
                    std::fs::read_to_string(task.join("comm"))
                        .is_ok_and(|name| name.starts_with(prefix))
                })
                .map(|task| task_usage(&task))
                .fold(Usage::default(), add),
            Part::Processes(pids) => with_children(pids)
                .into_iter()
                .flat_map(|pid| tasks(&Path::new("/proc").join(pid.to_string()).join("task")))
                .map(|task| task_usage(&task))
                .fold(Usage::default(), add),
        }
    }
}

fn add(a: Usage, b: Usage) -> Usage {
    Usage {
        cpu_ns: a.cpu_ns + b.cpu_ns,
        switches: a.switches + b.switches,
    }
}

fn tasks(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn task_usage(task: &Path) -> Usage {
    let cpu_ns = std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
    let switches = status
        .lines()
        .filter(|l| {
            l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Usage { cpu_ns, switches }
}

/// `pids` and every process whose parent is one of them (one level: nginx's workers).
fn with_children(pids: &[u32]) -> Vec<u32> {
    let mut all = pids.to_vec();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The fields after the command name, which is in parentheses and may hold spaces.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid.is_some_and(|ppid| pids.contains(&ppid)) && !all.contains(&pid) {
            all.push(pid);
        }
    }
    all
}
