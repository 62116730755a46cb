# Endpoints in production: no unauthenticated endpoint (Azure ML: "online endpoints
# should disable key-less access"), and a declared rollout, so a new version reaches
# users step by step (blue-green rollout steps, e.g. `steps = [10, 50, 100]`). A rollout
# of a single step is warned about.
package cairn.endpoints

production(workspace) if input.workspaces[workspace].environment == "production"

deny contains {"msg": msg, "address": address} if {
	some address, r in input.resources
	r.kind == "endpoint"
	production(r.workspace)
	r.spec.auth == "none"
	msg := sprintf("endpoint %s accepts unauthenticated requests (auth = \"none\") in production workspace %s; use auth = \"key\" or \"token\"", [r.name, r.workspace])
}

deny contains {"msg": msg, "address": address} if {
	some address, r in input.resources
	r.kind == "endpoint"
	production(r.workspace)
	not r.spec.rollout
	msg := sprintf("endpoint %s in production workspace %s has no rollout steps; add [endpoint.%s.rollout] with steps = [10, 50, 100]", [r.name, r.workspace, r.name])
}

# One step of 100 is a rollout in name only: allowed (a fault drill, a first release), but
# said out loud.
warn contains {"msg": msg, "address": address} if {
	some address, r in input.resources
	r.kind == "endpoint"
	production(r.workspace)
	count(r.spec.rollout.steps) < 2
	msg := sprintf("endpoint %s in production workspace %s moves all traffic in one step (steps = %v); use at least two steps, e.g. [10, 50, 100]", [r.name, r.workspace, r.spec.rollout.steps])
}
