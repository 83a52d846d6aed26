-- Each query must return no rows (strongroom verify --restore --check-sql checks.sql).
-- Orphaned sets: every set belongs to an existing workout.
SELECT s.id FROM sets s LEFT JOIN workouts w ON w.id = s.workout_id WHERE w.id IS NULL;
-- No negative weights.
SELECT id FROM sets WHERE weight < 0;
