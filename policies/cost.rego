# METADATA
# title: Per-request cost ceiling
# description: >-
#   A tenant may cap the worst-case cost of one request per data level
#   (input.tenant.cost_ceiling_usd[level], USD). Worst case = est_input_tokens x
#   price.input_per_mtok + max_output_tokens x choices x price.output_per_mtok, per million
#   tokens (the deployment registry's prices; choices = n, default 1). A deployment without a
#   usable price is excluded when a ceiling applies.
package gateway.routing

choices := object.get(input.request, "choices", 1)

worst_case_usd(d) := ((input.request.est_input_tokens * d.price.input_per_mtok) + ((input.request.max_output_tokens * choices) * d.price.output_per_mtok)) / 1000000

within_ceiling(d, ceiling) if worst_case_usd(d) <= ceiling

cost_message(d, ceiling) := sprintf("worst-case cost of %v USD exceeds the tenant's ceiling of %v USD per %s request", [worst_case_usd(d), ceiling, input.data.level]) if {
	is_number(worst_case_usd(d))
} else := sprintf("deployment has no usable price, so the tenant's ceiling of %v USD per %s request cannot be checked", [ceiling, input.data.level])

# METADATA
# title: Request cost above the tenant's ceiling
# custom:
#   short_name: cost_ceiling
#   message: "worst-case cost of <usd> USD exceeds the tenant's ceiling of <ceiling> USD per <level> request"
exclusion contains {"deployment": d.id, "rule": "cost_ceiling", "message": cost_message(d, ceiling)} if {
	some d in input.deployments
	ceiling := input.tenant.cost_ceiling_usd[input.data.level]
	not within_ceiling(d, ceiling)
}
