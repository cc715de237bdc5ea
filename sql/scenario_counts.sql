-- Impressions per scenario over a window: names the known scenarios when the target is empty.
SELECT scenario, COUNT(*) AS n
FROM samples
WHERE ds >= CAST(:start_ds AS DATE)
  AND ds <= CAST(:end_ds AS DATE)
GROUP BY scenario
ORDER BY n DESC
