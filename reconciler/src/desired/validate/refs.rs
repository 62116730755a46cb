//! References between resources (`dataset.loans`, `model.scorer@<version>`): parsed,
//! resolved to a declared resource of an expected kind, and recorded as a dependency;
//! each failure gets a did-you-mean hint.

use toml::Spanned;

use super::{Ctx, Out, View};
use crate::address::{Address, Kind, Reference, ReferenceError};
use crate::desired::{Dependency, Resource};
use crate::diagnostics::{did_you_mean, Diagnostic};

impl Ctx<'_> {
    /// Reads and resolves a reference, recording the dependency. Returns the target.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reference<'v>(
        &self,
        view: &View<'v>,
        from: &Resource,
        field: &str,
        value: &Spanned<String>,
        expected: &[Kind],
        allow_pin: bool,
        out: &mut Out,
    ) -> Option<(&'v Resource, Option<String>)> {
        let span = value.span();
        let text = value.get_ref();
        let expected_names = expected
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(" or ");
        let reference = match Reference::parse(text) {
            Ok(r) => r,
            Err(err) => {
                let suggestion = match err {
                    ReferenceError::CrossWorkspace => {
                        "references stay inside their workspace: declare what you need in this workspace (a dataset can point at the same source)".to_string()
                    }
                    ReferenceError::EmptyPin => {
                        let base = text.trim_end_matches('@');
                        format!("write a version after `@` (`{base}@<version>`), or drop the `@` to follow the newest version")
                    }
                    ReferenceError::Shape | ReferenceError::UnknownKind(_) => {
                        let name = text.rsplit('.').next().unwrap_or(text);
                        let kind = expected[0];
                        // A misspelt kind (`datset.loans`) gets the right one back.
                        let typed_kind = text.split_once('.').map(|(k, _)| k);
                        let kind = typed_kind
                            .and_then(|k| did_you_mean(k, expected.iter().map(|k| k.as_str())))
                            .unwrap_or(kind.as_str());
                        format!("write `{kind}.<name>`, e.g. `{kind}.{name}`")
                    }
                };
                out.error(
                    Diagnostic::error(
                        "invalid-reference",
                        format!("`{text}` is not a valid reference: {err}"),
                    )
                    .at(self.loc(&from.file, span.clone()))
                    .label(format!("`{field}` expects a {expected_names}"))
                    .help(suggestion),
                );
                return None;
            }
        };
        let ws = from.address.workspace.as_str();
        if !expected.contains(&reference.kind) {
            let same_name = expected.iter().find(|k| {
                view.get(&Address::new(ws, **k, reference.name.clone()))
                    .is_some()
            });
            out.error(
                Diagnostic::error(
                    "wrong-kind",
                    format!(
                        "`{field}` expects a {expected_names}, but `{text}` is a {}",
                        reference.kind
                    ),
                )
                .at(self.loc(&from.file, span.clone()))
                .label(format!("expected a {expected_names}"))
                .help(match same_name {
                    Some(k) => format!("did you mean `{k}.{}`?", reference.name),
                    None => format!(
                        "reference a {expected_names} here, as `{}.<name>`",
                        expected[0]
                    ),
                }),
            );
            return None;
        }
        if reference.pin.is_some() && !allow_pin {
            out.error(
                Diagnostic::error(
                    "pin-not-allowed",
                    format!(
                        "a {} reference can't be pinned to a version",
                        reference.kind
                    ),
                )
                .at(self.loc(&from.file, span.clone()))
                .help(format!(
                    "write `{}.{}` without `@…`",
                    reference.kind, reference.name
                )),
            );
        }
        let address = Address::new(ws, reference.kind, reference.name.clone());
        let Some(target) = view.get(&address) else {
            if view.broken.contains(&address) {
                return None;
            }
            let names = view.names(ws, reference.kind);
            let help = match did_you_mean(&reference.name, names.iter().copied()) {
                Some(best) => format!("did you mean `{}.{best}`?", reference.kind),
                None if names.is_empty() => format!(
                    "no {} is declared in workspace `{ws}`; declare it as `[{}.{}]`",
                    reference.kind, reference.kind, reference.name
                ),
                None => format!(
                    "declared {}s in `{ws}`: {}",
                    reference.kind,
                    names.iter().take(8).copied().collect::<Vec<_>>().join(", ")
                ),
            };
            out.error(
                Diagnostic::error(
                    "unresolved-reference",
                    format!(
                        "`{}.{}` is not declared in workspace `{ws}`",
                        reference.kind, reference.name
                    ),
                )
                .at(self.loc(&from.file, span.clone()))
                .label("no such resource")
                .help(help),
            );
            return None;
        };
        out.deps.push(Dependency {
            address,
            pin: reference.pin.clone(),
            span: value.span(),
        });
        Some((target, reference.pin))
    }
}
