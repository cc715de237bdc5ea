-- Rows of one day in the warehouse (any scenario): the sensor wait_for_data waits for more than 0.
SELECT COUNT(*) AS n
FROM samples
WHERE ds = CAST(:ds AS DATE)
