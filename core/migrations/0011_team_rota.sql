-- The on-call rota per care team: a shift belongs to a team, its person is a member of that
-- team, and an alert pages the rota of its patient's team (never another municipality's
-- nurse). Shifts that exist already (a single-team site) belong to the first team; a shift
-- inserted without naming a team joins the first team, as a patient does (0005).
ALTER TABLE oncall_shifts ADD COLUMN care_team_id bigint REFERENCES care_teams (id);
UPDATE oncall_shifts SET care_team_id = oximon_default_care_team();
ALTER TABLE oncall_shifts ALTER COLUMN care_team_id SET DEFAULT oximon_default_care_team(),
                          ALTER COLUMN care_team_id SET NOT NULL;
CREATE INDEX oncall_shifts_team_time_idx ON oncall_shifts (care_team_id, ends_at, starts_at);
