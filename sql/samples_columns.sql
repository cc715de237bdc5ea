-- The columns of the warehouse table (no rows): extract names any contract column it lacks.
SELECT *
FROM samples
WHERE 1 = 0
