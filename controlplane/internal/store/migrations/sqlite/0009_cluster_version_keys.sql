-- Sort keys of clusters' versions (versions.Version.SortKey as bytes, so
-- every backend compares them bytewise whatever its text collation): the
-- inventory query's version ranges are index range scans. Empty for a
-- missing or non-semver version. Filled in for existing rows at open.
ALTER TABLE clusters ADD COLUMN reported_version_key BLOB NOT NULL DEFAULT x'';
ALTER TABLE clusters ADD COLUMN desired_version_key BLOB NOT NULL DEFAULT x'';
ALTER TABLE clusters ADD COLUMN host_version_key BLOB NOT NULL DEFAULT x'';
CREATE INDEX clusters_reported_version ON clusters (reported_version_key, id);
CREATE INDEX clusters_desired_version ON clusters (desired_version_key, id);
CREATE INDEX clusters_host_version ON clusters (host_version_key, id);
CREATE INDEX clusters_product ON clusters (product, channel, id);
