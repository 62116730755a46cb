//! Progress on long work: spinners and byte bars on a terminal (indicatif), plain lines
//! otherwise (CI logs). Implements the library's [`Events`] hooks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use cairn::events::Events;
use cairn::plan::Action;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    /// `Some` when drawing bars on a terminal.
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    /// Whether to print a plain line for hashing (plan) events.
    verbose_hashing: bool,
}

impl Progress {
    pub fn new(terminal: bool) -> Progress {
        Progress {
            multi: terminal.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            bars: Mutex::new(HashMap::new()),
            verbose_hashing: false,
        }
    }

    fn spinner(&self, address: &str, message: String) {
        let Some(multi) = &self.multi else { return };
        let bar = multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix} {msg} {binary_bytes:>10} {elapsed:>4}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(address.to_string());
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(120));
        self.bars
            .lock()
            .expect("bars")
            .insert(address.to_string(), bar);
    }

    /// Prints a line without tearing the bars.
    fn line(&self, text: String) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None => eprintln!("{text}"),
        }
    }
}

impl Events for Progress {
    fn hashing(&self, address: &str, _files: usize, _bytes: u64) {
        if self.multi.is_some() {
            self.spinner(address, "hashing".into());
        } else if self.verbose_hashing {
            eprintln!("{address}: hashing");
        }
    }

    fn bytes(&self, address: &str, n: u64) {
        if let Some(bar) = self.bars.lock().expect("bars").get(address) {
            bar.inc(n);
        }
    }

    fn started(&self, address: &str, action: Action) {
        if self.multi.is_some() {
            self.spinner(address, action.as_str().to_string());
        } else {
            eprintln!("{address}: {} started", action.as_str());
        }
    }

    fn note(&self, address: &str, message: &str) {
        match self.bars.lock().expect("bars").get(address) {
            Some(bar) => bar.set_message(message.to_string()),
            None => self.line(format!("{address}: {message}")),
        }
    }

    fn finished(&self, address: &str, status: &str, message: Option<&str>) {
        let bar = self.bars.lock().expect("bars").remove(address);
        if let Some(bar) = bar {
            bar.finish_and_clear();
            if status == "hashed" {
                return;
            }
        } else if status == "hashed" {
            return;
        }
        let mark = match status {
            "succeeded" => "✓",
            "failed" => "✗",
            _ => "·",
        };
        match message {
            Some(m) => self.line(format!("{mark} {address}: {status}: {m}")),
            None => self.line(format!("{mark} {address}: {status}")),
        }
    }

    fn waiting_for_lock(&self, store: &str, holder: &str) {
        self.line(format!("waiting for the lock on {store}, held by {holder}"));
    }
}
