# This repository's own policy settings, read by Cairn's shipped policies. (Rules of
# its own would go here too: any `package` with `deny` / `warn` sets is evaluated.)
package cairn.config

# Container images may only come from the hospital's registry (`cairn.images`).
approved_registries := ["registry.stmarys.example"]
