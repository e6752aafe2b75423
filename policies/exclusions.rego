# METADATA
# title: Exclusions
# description: >-
#   Collects the exclusion objects ({"deployment", "rule", "message"}) the rule modules add to
#   the partial set `exclusion`, per deployment; eligible = offered and not excluded.
package gateway.routing

# Reasons per excluded deployment (sentences an auditor can read).
excluded := {id: messages |
	some e in exclusion
	id := e.deployment
	messages := sort([x.message | some x in exclusion; x.deployment == id])
}

# Short names of the rules that excluded each deployment (see each rule's METADATA).
rules := {id: names |
	some e in exclusion
	id := e.deployment
	names := sort({x.rule | some x in exclusion; x.deployment == id})
}

# Eligible deployments, in the order the gateway listed them.
eligible := [d.id | some d in input.deployments; not excluded[d.id]]

