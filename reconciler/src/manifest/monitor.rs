//! `[endpoint.<name>.monitor]`: input-drift monitoring. A share of the requests an
//! endpoint answers is captured (bodies only), and `cairn drift` compares the captured
//! inputs with the data the serving model version was trained on.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::units::Quantity;

/// The most a capture keeps on disk when `max_capture` says nothing.
pub const DEFAULT_MAX_CAPTURE: u64 = 64 << 20;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    /// The share of requests captured, more than 0 and at most 1 (`0.1`: one in ten).
    pub sample: Spanned<f64>,
    /// A feature whose population stability index is above this has drifted
    /// (`cairn drift` exits 2); 0.2 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_psi: Option<Spanned<f64>>,
    /// The most the captured requests take on disk (oldest files go first); 64Mi when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_capture: Option<Spanned<Quantity>>,
}

impl MonitorSpec {
    /// `max_capture` in bytes.
    pub fn max_capture_bytes(&self) -> u64 {
        self.max_capture.as_ref().map_or(DEFAULT_MAX_CAPTURE, |q| {
            u64::try_from(q.get_ref().millis() / 1000).unwrap_or(u64::MAX)
        })
    }

    pub fn max_psi(&self) -> f64 {
        self.max_psi
            .as_ref()
            .map_or(crate::input_drift::DEFAULT_MAX_PSI, |p| *p.get_ref())
    }
}
