-- A cluster's product (immutable) and release channel (docs/fleet.md).
ALTER TABLE clusters ADD COLUMN product TEXT NOT NULL DEFAULT '';
ALTER TABLE clusters ADD COLUMN channel TEXT NOT NULL DEFAULT '';
