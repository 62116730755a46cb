# Idle shutdown on compute (mirrors Azure ML's built-in "compute instances should have
# idle shutdown"): capacity that trains must shut down when idle, so a finished job
# doesn't keep GPUs billed. Serve-only compute is warned about, not denied: an endpoint
# that scales to nothing is a choice.
package cairn.compute

trains(spec) if not spec.roles

trains(spec) if "train" in spec.roles

deny contains {"msg": msg, "address": address} if {
	some address, r in input.resources
	r.kind == "compute"
	trains(r.spec)
	not r.spec.idle_shutdown
	msg := sprintf("compute %s has no idle_shutdown; compute that trains must shut down when idle (e.g. idle_shutdown = \"30m\")", [r.name])
}

warn contains {"msg": msg, "address": address} if {
	some address, r in input.resources
	r.kind == "compute"
	not trains(r.spec)
	not r.spec.idle_shutdown
	msg := sprintf("compute %s has no idle_shutdown; its capacity stays up while nothing is served", [r.name])
}
