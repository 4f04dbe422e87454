-- The token bucket has one definition: the upsert inside vg_admit_submission (drizzle/0013), which every submit runs and
-- the tests exercise through the admission. vg_take_token (drizzle/0012) was its copy, called by nothing but its tests.
DROP FUNCTION IF EXISTS vg_take_token(text, float8, float8);
