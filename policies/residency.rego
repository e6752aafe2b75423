# METADATA
# title: Data residency
# description: >-
#   Which localities (local | external) and jurisdictions may receive each data level, per
#   tenant (input.tenant.allowed[level]: {"any": true} | {"locality": [...]} |
#   {"jurisdictions": [...]}, both lists must hold when both are given).
package gateway.routing

# The residency rule the tenant set for this request's data level (undefined if none).
rule := input.tenant.allowed[input.data.level]

# METADATA
# title: No residency rule for the data level
# custom:
#   short_name: no_rule_for_level
#   message: "tenant <tenant> has no residency rule for <level> data, so nothing may receive it"
exclusion contains {"deployment": d.id, "rule": "no_rule_for_level", "message": msg} if {
	some d in input.deployments
	not input.tenant.allowed[input.data.level]
	msg := sprintf("tenant %s has no residency rule for %s data, so nothing may receive it", [input.principal.tenant, input.data.level])
}

# METADATA
# title: Residency rule allows nothing
# description: A rule that is not `any` and lists neither localities nor jurisdictions.
# custom:
#   short_name: empty_rule_for_level
#   message: "the residency rule for <level> data lists no allowed locality or jurisdiction"
exclusion contains {"deployment": d.id, "rule": "empty_rule_for_level", "message": msg} if {
	some d in input.deployments
	rule # defined: the tenant has a rule for this level (the no-rule case is handled above)
	not rule.any
	not rule.locality
	not rule.jurisdictions
	msg := sprintf("the residency rule for %s data lists no allowed locality or jurisdiction", [input.data.level])
}

# METADATA
# title: Locality not allowed for the data level
# custom:
#   short_name: locality_not_allowed
#   message: "locality <locality> is not allowed for <level> data (allowed: <localities>)"
exclusion contains {"deployment": d.id, "rule": "locality_not_allowed", "message": locality_message(d)} if {
	some d in input.deployments
	not rule.any
	rule.locality
	not d.locality in rule.locality
}

# METADATA
# title: Jurisdiction not allowed for the data level
# custom:
#   short_name: jurisdiction_not_allowed
#   message: "jurisdiction <jurisdiction> is not allowed for <level> data (allowed: <jurisdictions>)"
exclusion contains {"deployment": d.id, "rule": "jurisdiction_not_allowed", "message": jurisdiction_message(d)} if {
	some d in input.deployments
	not rule.any
	rule.jurisdictions
	not d.jurisdiction in rule.jurisdictions
}

# METADATA
# title: Unknown data level
# custom:
#   short_name: unknown_level
#   message: "the request's data level is unknown, so nothing may receive it"
exclusion contains {"deployment": d.id, "rule": "unknown_level", "message": "the request's data level is unknown, so nothing may receive it"} if {
	some d in input.deployments
	not level_rank[input.data.level]
}

# rego-cpp quirk: a string computed inside the policy (a literal, concat, object.get) passed to
# sprintf's %s comes back wrapped in quotes, so messages only format input values and use %v
# for arrays; a missing value gets its own sentence instead of a default string.
locality_message(d) := sprintf("locality %s is not allowed for %s data (allowed: %v)", [d.locality, input.data.level, rule.locality]) if {
	is_string(d.locality)
} else := sprintf("deployment declares no locality, which is not allowed for %s data (allowed: %v)", [input.data.level, rule.locality])

jurisdiction_message(d) := sprintf("jurisdiction %s is not allowed for %s data (allowed: %v)", [d.jurisdiction, input.data.level, rule.jurisdictions]) if {
	is_string(d.jurisdiction)
} else := sprintf("deployment declares no jurisdiction, which is not allowed for %s data (allowed: %v)", [input.data.level, rule.jurisdictions])
