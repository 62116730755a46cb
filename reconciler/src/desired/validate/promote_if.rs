//! Quality-gate rules: every `promote_if` condition, on an endpoint or a model, parses
//! ([`crate::promotion::Condition`]).

use toml::Spanned;

use super::{Ctx, Out};
use crate::desired::Resource;
use crate::diagnostics::Diagnostic;
use crate::manifest::SpannedStr;

impl Ctx<'_> {
    pub(super) fn conditions(
        &self,
        r: &Resource,
        promote_if: Option<&Spanned<Vec<SpannedStr>>>,
        out: &mut Out,
    ) {
        for condition in promote_if.iter().flat_map(|c| c.get_ref()) {
            if let Err(e) = crate::promotion::Condition::parse(condition.get_ref()) {
                out.error(
                    Diagnostic::error("invalid-condition", format!("promote_if: {e}"))
                        .at(self.loc(&r.file, condition.span()))
                        .help("a condition on the new model version's metrics, e.g. `\"auc >= 0.80\"` or `\"auc >= serving.auc - 0.005\"` (`serving.` is the version serving now)"),
                );
            }
        }
    }
}
