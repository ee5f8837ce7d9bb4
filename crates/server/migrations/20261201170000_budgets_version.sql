-- A version number per project that moves whenever one of its budgets is created, changed or
-- removed. Replicas cache a project's budgets and check this number inside the reservation's own
-- statement, so a reservation does not read the budgets again, and a change made on any replica
-- is seen by every other one at its next reservation.

ALTER TABLE projects ADD COLUMN budgets_version BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION bursora_budgets_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE projects SET budgets_version = budgets_version + 1 WHERE id = OLD.project_id;
    ELSE
        UPDATE projects SET budgets_version = budgets_version + 1 WHERE id = NEW.project_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER budgets_version AFTER INSERT OR UPDATE OR DELETE ON budgets
    FOR EACH ROW EXECUTE FUNCTION bursora_budgets_changed();
