# METADATA
# title: Data levels
# description: >-
#   The ordered data levels of DESIGN.md (public < internal < confidential < restricted);
#   modules compare levels by rank.
package gateway.routing

level_rank := {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}
