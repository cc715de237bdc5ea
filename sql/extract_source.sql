-- Entire-space (source) samples of the days [:start_ds, :end_ds]: every scenario but the target.
SELECT sample_id, ds, event_ts, scenario, user_id, item_id, category_id,
       user_age, user_gender, user_city, item_brand, device, hour,
       item_price, user_activity, item_popularity, click, conversion
FROM samples
WHERE ds >= CAST(:start_ds AS DATE)
  AND ds <= CAST(:end_ds AS DATE)
  AND scenario <> :target_scenario
ORDER BY sample_id
