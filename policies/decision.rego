# METADATA
# title: Sovereign Gateway routing decision
# description: >-
#   Assembles data.gateway.routing.decision from the exclusions the other modules of this
#   package contribute (residency, data handling, capability, cost, tenant models, kill switch,
#   availability) and the obligations. The decision is always an object; anything else means
#   deny. Every exclusion is written so that a missing or undefined value (an absent attribute, an arithmetic
#   overflow, missing policy data) excludes the deployment rather than letting it through.
#   Each exclusion rule carries METADATA: title, custom.short_name (the rule name recorded in
#   the decision's "rules") and custom.message (the sentence it produces).
package gateway.routing

reasons := ["no deployment is eligible for this request"] if {
	count(eligible) == 0
} else := [sprintf("%d of %d deployments eligible for %s data", [count(eligible), count(input.deployments), input.data.level])]

decision := {
	"allow": count(eligible) > 0,
	"eligible": eligible,
	"excluded": excluded,
	"rules": rules,
	"obligations": obligations,
	"reasons": reasons,
}
