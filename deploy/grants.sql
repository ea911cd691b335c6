-- LeadArchive: least-privilege grants for its database user on the Vicidial database.
--
-- Tokens, filled in by sed (GRANT takes no variables, so this file cannot use SQL variables):
--   @@DATABASE@@  the Vicidial database, VARDB_database in /etc/astguiclient.conf (usually asterisk)
--   @@USER@@      the service's own user, e.g. leadarchive (create it first, see below)
--   @@HOST@@      where the service connects from: localhost for a socket or 127.0.0.1 for TCP on
--                 the Vicidial server itself (match the host in LEADARCHIVE_DATABASE_URL)
--
-- Create the user once, as root, typing the statement into `mysql -u root -p` (a password on a
-- command line is visible to every user in the process list and stays in the shell's history):
--   CREATE USER 'leadarchive'@'127.0.0.1' IDENTIFIED BY '<password>';
-- then apply this file:
--   sed -e 's/@@DATABASE@@/asterisk/g' -e 's/@@USER@@/leadarchive/g' -e 's/@@HOST@@/127.0.0.1/g' \
--       deploy/grants.sql | mysql -u root -p
--
-- Optional parts are lines starting with "-- [name] "; enable one by adding its sed expression:
--   -e 's/^-- \[seed-demo\] //'               `leadarchive seed-demo` and its `--remove` (see below)
--   -e 's/^-- \[create-archive-table\] //'    CREATE, ALTER on vicidial_list_archive only, for a
--                                             one-time `leadarchive create-archive-table`
--                                             (tasks.schema.create_archive_table)
--   -e 's/^-- \[restore\] //'                 INSERT on vicidial_list, DELETE on the archive, for
--                                             restore jobs (see [restore] below)
--
-- What the service runs, and so all it gets (least privilege by capability):
--   * the archive batch: SELECT, DELETE on vicidial_list (read the leads, delete the verified
--     ones) and SELECT, INSERT, UPDATE on vicidial_list_archive (copy and refresh). No INSERT or
--     UPDATE on vicidial_list and no DELETE on the archive: a leaked password can neither rewrite
--     live leads nor wipe the archive;
--   * the in-use guard: SELECT on vicidial_hopper, vicidial_auto_calls, vicidial_live_agents
--     (queued, in a call, with or previewed by an agent) and vicidial_callbacks (a pending
--     scheduled callback): such a lead is never deleted. Without SELECT these tables are
--     invisible in information_schema, and the guard would have nothing to check: keep these
--     grants (a table that exists but cannot be read makes the batch refuse every delete);
--   * LOCK TABLES on the database: the archive is locked while copies are written (LOCK TABLES
--     also needs SELECT on every table it locks, which the grants below give);
--   * CREATE TEMPORARY TABLES on the database: on MyISAM each batch reads its live rows once
--     into a private, session-only temporary table and copies from there, so vicidial_list is
--     locked only for that read and for the short verified deletes (measured: the dialer's p99
--     stays near 11 ms instead of 20-30 ms). Vicidial's stock `cron` user does NOT have this
--     privilege: as `cron`, or without this line, the batch still works, on its slower path
--     (everything in short LOCK TABLES chunks on the real tables);
--   * Vicidial's admin log: INSERT on vicidial_admin_log, one row per finished job (the last
--     statement of this file, see there). Not SELECT: the log holds other administrators' SQL;
--   * information_schema (columns, engines, primary keys): readable for every table the user has
--     a privilege on, with no grant of its own.
-- Nothing else: no DROP, ALTER, CREATE, INDEX, FILE, PROCESS, SUPER, GRANT OPTION; nothing on
-- any other database or on any other Vicidial table.
--
-- What each later capability adds, for the users (or keys' roles) that need it, and only those:
--   * restore (`POST /vicidial/leads/dearchive`, Vicidial's lead_dearchive): INSERT on
--     vicidial_list (the lead comes back) and DELETE on vicidial_list_archive (its archive row
--     goes, by a statement that compares it with the live copy). These are exactly the two
--     privileges the archive role lacks on purpose: give them to a separate restore user
--     (the optional [restore] block below);
--   * archive by selection with `campaign_ids`: SELECT on vicidial_lists (a list's campaign);
--   * `leadarchive seed-demo` on a test database: see [seed-demo] at the end.
--
-- A temporary table is visible to its own session only and vanishes with it; the privilege gives
-- no access to any other table. The service also runs as `cron` (slower path, see above), though
-- a user of its own, with this file, is the least-privilege choice.
--
-- vicidial_list_archive must exist before this file runs: MariaDB refuses a table-level GRANT on a
-- missing table (error 1146) unless the same statement grants CREATE. Either make the archive
-- first, as root, with Vicidial's recipe:
--   CREATE TABLE vicidial_list_archive LIKE vicidial_list;
--   ALTER TABLE vicidial_list_archive MODIFY lead_id INT(9) UNSIGNED NOT NULL;
-- or enable [create-archive-table], which puts CREATE, ALTER into the archive's GRANT below, and
-- let the service make it once. Take them back afterwards:
--   REVOKE CREATE, ALTER ON `asterisk`.`vicidial_list_archive` FROM 'leadarchive'@'127.0.0.1';
--
-- Safe to run again: GRANT only adds privileges the user lacks.

GRANT SELECT, DELETE
  ON `@@DATABASE@@`.`vicidial_list` TO '@@USER@@'@'@@HOST@@';

GRANT SELECT, INSERT, UPDATE
-- [create-archive-table] , CREATE, ALTER
  ON `@@DATABASE@@`.`vicidial_list_archive` TO '@@USER@@'@'@@HOST@@';

GRANT SELECT ON `@@DATABASE@@`.`vicidial_hopper` TO '@@USER@@'@'@@HOST@@';
GRANT SELECT ON `@@DATABASE@@`.`vicidial_auto_calls` TO '@@USER@@'@'@@HOST@@';
GRANT SELECT ON `@@DATABASE@@`.`vicidial_live_agents` TO '@@USER@@'@'@@HOST@@';
GRANT SELECT ON `@@DATABASE@@`.`vicidial_callbacks` TO '@@USER@@'@'@@HOST@@';

GRANT LOCK TABLES, CREATE TEMPORARY TABLES ON `@@DATABASE@@`.* TO '@@USER@@'@'@@HOST@@';

-- [seed-demo]: `leadarchive seed-demo` reads vicidial_lists for a free list ID and adds an
-- inactive dummy list there, then its leads to vicidial_list (INSERT); `seed-demo --remove` deletes
-- the dummies from vicidial_list and vicidial_list_archive, then the list (DELETE). It never touches
-- an existing row, but DELETE on the archive is what the service's user otherwise lacks: grant this
-- part for the test only, and take it back afterwards (DELETE on vicidial_list stays: the batch
-- needs it):
--   REVOKE SELECT, INSERT, DELETE ON `asterisk`.`vicidial_lists` FROM 'leadarchive'@'127.0.0.1';
--   REVOKE INSERT ON `asterisk`.`vicidial_list` FROM 'leadarchive'@'127.0.0.1';
--   REVOKE DELETE ON `asterisk`.`vicidial_list_archive` FROM 'leadarchive'@'127.0.0.1';
-- [seed-demo] GRANT SELECT, INSERT, DELETE ON `@@DATABASE@@`.`vicidial_lists` TO '@@USER@@'@'@@HOST@@';
-- [seed-demo] GRANT INSERT, DELETE ON `@@DATABASE@@`.`vicidial_list` TO '@@USER@@'@'@@HOST@@';
-- [seed-demo] GRANT DELETE ON `@@DATABASE@@`.`vicidial_list_archive` TO '@@USER@@'@'@@HOST@@';

-- [restore]: restore jobs (`POST /vicidial/leads/dearchive`, `leadarchive submit --dearchive`,
-- Vicidial's lead_dearchive) copy an archived lead back into vicidial_list (INSERT) and then remove
-- its archive row by a DELETE that compares it with the live copy, column by column (DELETE on the
-- archive). Only for deployments that allow restore, and preferably for a user (or a key's role) of
-- its own: these are exactly the two privileges the archive user lacks on purpose. Without them a
-- restore job fails at once ("a restore needs INSERT on vicidial_list and DELETE on
-- vicidial_list_archive") and has changed nothing; archiving is unaffected. Take them back with:
--   REVOKE INSERT ON `asterisk`.`vicidial_list` FROM 'leadarchive'@'127.0.0.1';
--   REVOKE DELETE ON `asterisk`.`vicidial_list_archive` FROM 'leadarchive'@'127.0.0.1';
-- [restore] GRANT INSERT ON `@@DATABASE@@`.`vicidial_list` TO '@@USER@@'@'@@HOST@@';
-- [restore] GRANT DELETE ON `@@DATABASE@@`.`vicidial_list_archive` TO '@@USER@@'@'@@HOST@@';

-- Vicidial's Administration Change Log: each finished job that is not a dry run adds one row
-- (section LEADS, code LEAD ARCHIVE API), as Vicidial's own scripts do. INSERT only: the service
-- never reads the log, which holds other administrators' SQL. Every Vicidial database has this
-- table; on a database without it this statement fails (error 1146) after all the others have
-- been applied, and the service simply writes no admin log.
GRANT INSERT ON `@@DATABASE@@`.`vicidial_admin_log` TO '@@USER@@'@'@@HOST@@';
