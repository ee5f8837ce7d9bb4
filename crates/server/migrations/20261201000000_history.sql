-- Call history: each reservation keeps its tags, provider, model, requested amount and the
-- tokens its settlement reported; refusals (state 'refused') and usage recorded without a
-- reservation (state 'usage') are rows of the same table, so reservation and usage ids share
-- one namespace per project.

-- Clients may choose reservation ids; they are unique per project, not across projects.
ALTER TABLE reservations DROP CONSTRAINT reservations_pkey;
ALTER TABLE reservations ADD PRIMARY KEY (project_id, id);

ALTER TABLE reservations
    ADD COLUMN tags          JSONB,
    ADD COLUMN provider      TEXT,
    ADD COLUMN model         TEXT,
    ADD COLUMN requested     BIGINT,
    ADD COLUMN input_tokens  BIGINT,
    ADD COLUMN output_tokens BIGINT,
    ADD COLUMN refused_by    TEXT;                -- JSON {id, name, key?} of the refusing budget

-- Listing newest first and summing spend over a range, per project.
CREATE INDEX reservations_at ON reservations (project_id, created_at_ms, id);
