# METADATA
# title: Incident kill switch
# description: >-
#   When policy data sets data.killswitch.external_egress_blocked to true (an incident), no
#   request may leave for a deployment that is not local; local deployments keep serving.
#   Missing or non-boolean kill-switch data blocks external egress too (fail closed).
#   Toggle it with `gateway policy killswitch on|off`, which activates a new policy revision.
package gateway.routing

external_egress_open if data.killswitch.external_egress_blocked == false

# METADATA
# title: External egress blocked by the kill switch
# custom:
#   short_name: external_egress_blocked
#   message: "external egress is blocked by the incident kill switch"
exclusion contains {"deployment": d.id, "rule": "external_egress_blocked", "message": "external egress is blocked by the incident kill switch"} if {
	some d in input.deployments
	not d.locality == "local"
	not external_egress_open
}
