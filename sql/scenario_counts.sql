-- Impressions per scenario over a window: names the known scenarios when the target is empty.
SELECT $scenario AS scenario, COUNT(*) AS n
FROM $table
WHERE $date >= CAST(:start_ds AS DATE)
  AND $date <= CAST(:end_ds AS DATE)
GROUP BY $scenario
ORDER BY n DESC
