//! `[endpoint.<name>.monitor]`: a sample share in (0, 1], a positive `max_psi` and a
//! bounded `max_capture`, on every target (the local router or each pod's `cairn
//! pod-proxy` captures the requests).

use toml::Spanned;

use super::{Ctx, Out};
use crate::desired::Resource;
use crate::diagnostics::Diagnostic;
use crate::manifest::monitor::MonitorSpec;

/// The least and the most a capture may keep on disk.
const MIN_CAPTURE: u64 = 1 << 20;
const MAX_CAPTURE: u64 = 4 << 30;

impl Ctx<'_> {
    pub(super) fn monitor(&self, r: &Resource, monitor: &Spanned<MonitorSpec>, out: &mut Out) {
        let spec = monitor.get_ref();
        let sample = *spec.sample.get_ref();
        if !(sample > 0.0 && sample <= 1.0) {
            out.error(
                Diagnostic::error(
                    "invalid-sample",
                    format!("`sample` is {sample}; it is the share of requests captured"),
                )
                .at(self.loc(&r.file, spec.sample.span()))
                .help("give a share more than 0 and at most 1, e.g. `sample = 0.1` (one request in ten)"),
            );
        }
        if let Some(psi) = &spec.max_psi {
            let v = *psi.get_ref();
            if !(v.is_finite() && v > 0.0) {
                out.error(
                    Diagnostic::error("invalid-threshold", format!("`max_psi` is {v}"))
                        .at(self.loc(&r.file, psi.span()))
                        .help("a positive population stability index; 0.1 is a moderate shift, 0.2 (the default) a significant one"),
                );
            }
        }
        if let Some(q) = &spec.max_capture {
            let bytes = spec.max_capture_bytes();
            if !(MIN_CAPTURE..=MAX_CAPTURE).contains(&bytes) {
                out.error(
                    Diagnostic::error(
                        "invalid-quantity",
                        format!("`max_capture` is {}", q.get_ref()),
                    )
                    .at(self.loc(&r.file, q.span()))
                    .help("between 1Mi and 4Gi of captured requests on disk, e.g. `max_capture = \"64Mi\"` (the default)"),
                );
            }
        }
    }
}
