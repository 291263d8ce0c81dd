-- `orders_by_user_created (user_id, created_at, id)` (0007) served only the back office's
-- order list filtered by member. `orders_by_user (user_id, id)` (0003) finds the same rows
-- (a member's orders), which are then sorted by `created_at`: a member has few orders, and
-- both planners choose that plan (docs/back-office.md). Every order inserted paid for both
-- entries on a random page of its member's: one index fewer on the write path (issue #10).
DROP INDEX orders_by_user_created;
