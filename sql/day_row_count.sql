-- Rows of one day in the warehouse (any scenario): the sensor wait_for_data waits for more than 0.
-- $table and $date are identifiers rendered from the feature spec (validated and quoted).
SELECT COUNT(*) AS n
FROM $table
WHERE $date = CAST(:ds AS DATE)
