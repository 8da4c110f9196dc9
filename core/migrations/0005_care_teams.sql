-- Care teams (a municipality's home-care district): every patient belongs to one, a user to one
-- or more, and a user sees and acts only on their teams' patients, alerts and reports, so
-- several municipalities can share one installation.
CREATE TABLE care_teams (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 120),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A site with one district needs nothing more than this team; more are added by an admin.
INSERT INTO care_teams (name) VALUES ('Hjemmesykepleien');

CREATE TABLE user_care_teams (
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    care_team_id bigint NOT NULL REFERENCES care_teams (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, care_team_id)
);
CREATE INDEX user_care_teams_team_idx ON user_care_teams (care_team_id);

-- Users who exist already (a single-team site) join the first team.
INSERT INTO user_care_teams (user_id, care_team_id)
SELECT u.id, (SELECT min(id) FROM care_teams) FROM users u;

-- A patient enrolled without naming a team (the demo, the simulator, a one-team site) joins the
-- first team; the API names the team whenever a user belongs to more than one.
CREATE FUNCTION oximon_default_care_team() RETURNS bigint
    LANGUAGE sql STABLE AS $$ SELECT min(id) FROM care_teams $$;

ALTER TABLE patients ADD COLUMN care_team_id bigint REFERENCES care_teams (id);
UPDATE patients SET care_team_id = oximon_default_care_team();
ALTER TABLE patients ALTER COLUMN care_team_id SET DEFAULT oximon_default_care_team(),
                     ALTER COLUMN care_team_id SET NOT NULL;
CREATE INDEX patients_care_team_idx ON patients (care_team_id, status);
