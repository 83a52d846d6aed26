"""The benchmark database's schema (``datagen.generate`` runs ``SCHEMA_SQL`` before the
load and ``POST_LOAD_SQL`` after it: indexes and foreign keys come after the rows)."""

SCHEMA_SQL = """
CREATE TABLE users (
    id              bigint PRIMARY KEY,
    public_id       uuid NOT NULL,
    email           text NOT NULL,
    display_name    text NOT NULL,
    password_hash   text NOT NULL,
    created_at      timestamptz NOT NULL,
    last_login_at   timestamptz,
    plan            text NOT NULL,
    profile         jsonb NOT NULL
);
CREATE TABLE exercises (
    id              integer PRIMARY KEY,
    slug            text NOT NULL,
    name            text NOT NULL,
    category        text NOT NULL,
    muscle_groups   text[] NOT NULL,
    description     text NOT NULL
);
CREATE TABLE workouts (
    id              bigint PRIMARY KEY,
    public_id       uuid NOT NULL,
    user_id         bigint NOT NULL,
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    title           text NOT NULL,
    notes           text,
    perceived_effort smallint,
    calories        integer,
    device          text
);
CREATE TABLE workout_sets (
    id              bigint PRIMARY KEY,
    workout_id      bigint NOT NULL,
    exercise_id     integer NOT NULL,
    position        smallint NOT NULL,
    reps            smallint NOT NULL,
    weight_kg       numeric(6,2) NOT NULL,
    rpe             numeric(3,1),
    rest_seconds    integer,
    completed_at    timestamptz NOT NULL
);
CREATE TABLE invoices (
    id              bigint PRIMARY KEY,
    public_id       uuid NOT NULL,
    user_id         bigint NOT NULL,
    number          text NOT NULL,
    issued_at       timestamptz NOT NULL,
    due_at          timestamptz NOT NULL,
    status          text NOT NULL,
    currency        char(3) NOT NULL,
    amount          numeric(12,2) NOT NULL,
    tax             numeric(12,2) NOT NULL,
    line_items      jsonb NOT NULL,
    pdf             bytea
);
CREATE TABLE notes (
    id              bigint PRIMARY KEY,
    user_id         bigint NOT NULL,
    workout_id      bigint,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    title           text NOT NULL,
    body            text NOT NULL,
    tags            text[] NOT NULL
);
"""

POST_LOAD_SQL = """
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE UNIQUE INDEX users_public_id_key ON users (public_id);
CREATE INDEX users_last_login_idx ON users (last_login_at);
CREATE UNIQUE INDEX exercises_slug_key ON exercises (slug);
CREATE UNIQUE INDEX workouts_public_id_key ON workouts (public_id);
CREATE INDEX workouts_user_started_idx ON workouts (user_id, started_at);
CREATE INDEX workout_sets_workout_idx ON workout_sets (workout_id);
CREATE INDEX workout_sets_exercise_idx ON workout_sets (exercise_id);
CREATE UNIQUE INDEX invoices_number_key ON invoices (number);
CREATE INDEX invoices_user_idx ON invoices (user_id);
CREATE INDEX invoices_status_idx ON invoices (status) WHERE status <> 'paid';
CREATE INDEX notes_user_created_idx ON notes (user_id, created_at);
CREATE INDEX notes_tags_idx ON notes USING gin (tags);
ALTER TABLE workouts ADD CONSTRAINT workouts_user_fk
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE workout_sets ADD CONSTRAINT workout_sets_workout_fk
    FOREIGN KEY (workout_id) REFERENCES workouts (id) ON DELETE CASCADE;
ALTER TABLE workout_sets ADD CONSTRAINT workout_sets_exercise_fk
    FOREIGN KEY (exercise_id) REFERENCES exercises (id);
ALTER TABLE invoices ADD CONSTRAINT invoices_user_fk
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE notes ADD CONSTRAINT notes_user_fk
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE notes ADD CONSTRAINT notes_workout_fk
    FOREIGN KEY (workout_id) REFERENCES workouts (id) ON DELETE SET NULL;
CREATE VIEW weekly_volume AS
    SELECT w.user_id, date_trunc('week', w.started_at) AS week,
           sum(s.reps * s.weight_kg) AS volume_kg, count(*) AS sets
    FROM workouts w JOIN workout_sets s ON s.workout_id = w.id
    GROUP BY 1, 2;
"""
