-- Target (mini-app) samples of the days [:start_ds, :end_ds].
-- $columns, $table, $date, $scenario, $sample_id are identifiers rendered from the feature spec
-- (validated and quoted, see ecat_tasks/spec.py); values are bound parameters (:name) only.
SELECT $columns
FROM $table
WHERE $date >= CAST(:start_ds AS DATE)
  AND $date <= CAST(:end_ds AS DATE)
  AND $scenario = :target_scenario
ORDER BY $sample_id
