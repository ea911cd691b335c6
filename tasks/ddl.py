"""Vicidial's tables as its create script defines them (schema 1728), and the archive recipe.

The DDL is used by the tests, the benchmarks, the demo seeder and ``leadarchive
create-archive-table``; the batch itself never assumes it and reads the live columns from
``information_schema`` instead (``tasks.schema``). The tables around ``vicidial_list`` (the
dialer's, the callbacks, the lists, the admin log) are Vicidial 2.14's own, every column:
``vicidial_hopper`` and ``vicidial_auto_calls`` are always MEMORY (Vicidial converts them), the
others take the engine asked for (MyISAM on a Vicidial server), and only some of them index
``lead_id``. The embedded demo gets the same tables and columns on SQLite (``sqlite_ddl``).
"""

from __future__ import annotations

import re

from sqlalchemy import Connection

from tasks.schema import ARCHIVE_TABLE, LIVE_TABLE

CALLED_SINCE_LAST_RESET = (
    "Y",
    "N",
    "Y1",
    "Y2",
    "Y3",
    "Y4",
    "Y5",
    "Y6",
    "Y7",
    "Y8",
    "Y9",
    "Y10",
    "D",
)
GENDERS = ("M", "F", "U")


def _enum(values: tuple[str, ...]) -> str:
    return "ENUM(" + ",".join(f"'{v}'" for v in values) + ")"


VICIDIAL_LIST_DDL = f"""
CREATE TABLE vicidial_list (
  lead_id INT(9) UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  entry_date DATETIME,
  modify_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  status VARCHAR(6),
  user VARCHAR(20),
  vendor_lead_code VARCHAR(20),
  source_id VARCHAR(50),
  list_id BIGINT(14) UNSIGNED NOT NULL DEFAULT '0',
  gmt_offset_now DECIMAL(4,2) DEFAULT '0.00',
  called_since_last_reset {_enum(CALLED_SINCE_LAST_RESET)} DEFAULT 'N',
  phone_code VARCHAR(10),
  phone_number VARCHAR(18) NOT NULL,
  title VARCHAR(4),
  first_name VARCHAR(30),
  middle_initial VARCHAR(1),
  last_name VARCHAR(30),
  address1 VARCHAR(100),
  address2 VARCHAR(100),
  address3 VARCHAR(100),
  city VARCHAR(50),
  state VARCHAR(2),
  province VARCHAR(50),
  postal_code VARCHAR(10),
  country_code VARCHAR(3),
  gender {_enum(GENDERS)} DEFAULT 'U',
  date_of_birth DATE,
  alt_phone VARCHAR(12),
  email VARCHAR(70),
  security_phrase VARCHAR(100),
  comments VARCHAR(255),
  called_count SMALLINT(5) UNSIGNED DEFAULT '0',
  last_local_call_time DATETIME,
  `rank` SMALLINT(5) NOT NULL DEFAULT '0',
  owner VARCHAR(20) DEFAULT '',
  entry_list_id BIGINT(14) UNSIGNED NOT NULL DEFAULT '0',
  INDEX phone_number (phone_number),
  INDEX list_id (list_id),
  INDEX called_since_last_reset (called_since_last_reset),
  INDEX status (status),
  INDEX gmt_offset_now (gmt_offset_now),
  INDEX postal_code (postal_code),
  INDEX last_local_call_time (last_local_call_time),
  INDEX `rank` (`rank`),
  INDEX owner (owner),
  INDEX phone_list (phone_number, list_id),
  INDEX list_phone (list_id, phone_number),
  INDEX list_status (list_id, status)
) ENGINE={{engine}}
"""

# Vicidial's documented recipe: same columns, engine and indexes, AUTO_INCREMENT dropped.
ARCHIVE_RECIPE = (
    "CREATE TABLE vicidial_list_archive LIKE vicidial_list",
    "ALTER TABLE vicidial_list_archive MODIFY lead_id INT(9) UNSIGNED NOT NULL",
)

# The dialer's tables and the lists, admin log and callbacks around vicidial_list, as Vicidial
# 2.14's extras/MySQL_AST_CREATE_tables.sql leaves them (db schema 1719-1720): every column, in
# order, with the indexes its later CREATE INDEX statements add (vlali, vlaus) written inline.
# Two deliberate differences, both what a typical Vicidial server shows: a table's first bare
# TIMESTAMP is written out as NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP
# (MariaDB before 10.10 made it so; 10.10+ would make it NULL), and unnamed indexes carry the
# name MySQL gives them (the first column's).
#
# vicidial_hopper and vicidial_auto_calls are always MEMORY: the create script declares them
# MyISAM and converts them (ALTER TABLE ... ENGINE=MEMORY) before any row exists, whatever
# engine the rest uses. Neither has a TEXT or BLOB column, which MEMORY could not hold. A MEMORY
# table is capped by the max_heap_table_size in force when it is created (16 MB by default: about
# 10,000 vicidial_auto_calls rows, 68,000 vicidial_hopper rows); a benchmark that needs more sets
# it for its session before calling create_vicidial_tables.
MEMORY_TABLES = ("vicidial_hopper", "vicidial_auto_calls")

HOPPER_DDL = """
CREATE TABLE vicidial_hopper (
  hopper_id INT(9) UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  lead_id INT(9) UNSIGNED NOT NULL,
  campaign_id VARCHAR(8),
  status ENUM('READY','QUEUE','INCALL','DONE','HOLD','DNC','RHOLD','RQUEUE') DEFAULT 'READY',
  user VARCHAR(20),
  list_id BIGINT(14) UNSIGNED NOT NULL,
  gmt_offset_now DECIMAL(4,2) DEFAULT '0.00',
  state VARCHAR(2) DEFAULT '',
  alt_dial VARCHAR(6) DEFAULT 'NONE',
  priority TINYINT(2) DEFAULT '0',
  source VARCHAR(1) DEFAULT '',
  vendor_lead_code VARCHAR(20) DEFAULT '',
  INDEX lead_id (lead_id)
) ENGINE=MEMORY
"""

# No index on lead_id: the in-use check scans it (it holds one row per call being placed).
AUTO_CALLS_DDL = """
CREATE TABLE vicidial_auto_calls (
  auto_call_id INT(9) UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  server_ip VARCHAR(15) NOT NULL,
  campaign_id VARCHAR(20),
  status ENUM('SENT','RINGING','LIVE','XFER','PAUSED','CLOSER','BUSY','DISCONNECT','IVR')
    DEFAULT 'PAUSED',
  lead_id INT(9) UNSIGNED NOT NULL,
  uniqueid VARCHAR(20),
  callerid VARCHAR(20),
  channel VARCHAR(100),
  phone_code VARCHAR(10),
  phone_number VARCHAR(18),
  call_time DATETIME,
  call_type ENUM('IN','OUT','OUTBALANCE') DEFAULT 'OUT',
  stage VARCHAR(20) DEFAULT 'START',
  last_update_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  alt_dial VARCHAR(6) DEFAULT 'NONE',
  queue_priority TINYINT(2) DEFAULT '0',
  agent_only VARCHAR(20) DEFAULT '',
  agent_grab VARCHAR(20) DEFAULT '',
  queue_position SMALLINT(4) UNSIGNED DEFAULT '1',
  extension VARCHAR(100) DEFAULT '',
  agent_grab_extension VARCHAR(100) DEFAULT '',
  INDEX uniqueid (uniqueid),
  INDEX callerid (callerid),
  INDEX call_time (call_time),
  INDEX last_update_time (last_update_time)
) ENGINE=MEMORY
"""

# lead_id is set when a call is dialed; an agent previewing a lead has it in preview_lead_id,
# which no index covers.
LIVE_AGENTS_DDL = """
CREATE TABLE vicidial_live_agents (
  live_agent_id INT(9) UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user VARCHAR(20),
  server_ip VARCHAR(15) NOT NULL,
  conf_exten VARCHAR(20),
  extension VARCHAR(100),
  status ENUM('READY','QUEUE','INCALL','PAUSED','CLOSER','MQUEUE') DEFAULT 'PAUSED',
  lead_id INT(9) UNSIGNED NOT NULL,
  campaign_id VARCHAR(8),
  uniqueid VARCHAR(20),
  callerid VARCHAR(20),
  channel VARCHAR(100),
  random_id INT(8) UNSIGNED,
  last_call_time DATETIME,
  last_update_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  last_call_finish DATETIME,
  closer_campaigns TEXT,
  call_server_ip VARCHAR(15),
  user_level TINYINT(3) UNSIGNED DEFAULT '0',
  comments VARCHAR(20),
  campaign_weight TINYINT(1) DEFAULT '0',
  calls_today SMALLINT(5) UNSIGNED DEFAULT '0',
  external_hangup VARCHAR(1) DEFAULT '',
  external_status VARCHAR(255) DEFAULT '',
  external_pause VARCHAR(20) DEFAULT '',
  external_dial VARCHAR(100) DEFAULT '',
  external_ingroups TEXT,
  external_blended ENUM('0','1') DEFAULT '0',
  external_igb_set_user VARCHAR(20) DEFAULT '',
  external_update_fields ENUM('0','1') DEFAULT '0',
  external_update_fields_data VARCHAR(255) DEFAULT '',
  external_timer_action VARCHAR(20) DEFAULT '',
  external_timer_action_message VARCHAR(255) DEFAULT '',
  external_timer_action_seconds MEDIUMINT(7) DEFAULT '-1',
  agent_log_id INT(9) UNSIGNED DEFAULT '0',
  last_state_change DATETIME,
  agent_territories TEXT,
  outbound_autodial ENUM('Y','N') DEFAULT 'N',
  manager_ingroup_set ENUM('Y','N','SET') DEFAULT 'N',
  ra_user VARCHAR(20) DEFAULT '',
  ra_extension VARCHAR(100) DEFAULT '',
  external_dtmf VARCHAR(100) DEFAULT '',
  external_transferconf VARCHAR(120) DEFAULT '',
  external_park VARCHAR(40) DEFAULT '',
  external_timer_action_destination VARCHAR(100) DEFAULT '',
  on_hook_agent ENUM('Y','N') DEFAULT 'N',
  on_hook_ring_time SMALLINT(5) DEFAULT '15',
  ring_callerid VARCHAR(20) DEFAULT '',
  last_inbound_call_time DATETIME,
  last_inbound_call_finish DATETIME,
  campaign_grade TINYINT(2) UNSIGNED DEFAULT '1',
  external_recording VARCHAR(20) DEFAULT '',
  external_pause_code VARCHAR(6) DEFAULT '',
  pause_code VARCHAR(6) DEFAULT '',
  preview_lead_id INT(9) UNSIGNED DEFAULT '0',
  external_lead_id INT(9) UNSIGNED DEFAULT '0',
  last_inbound_call_time_filtered DATETIME,
  last_inbound_call_finish_filtered DATETIME,
  dial_campaign_id VARCHAR(8) DEFAULT '',
  INDEX random_id (random_id),
  INDEX last_call_time (last_call_time),
  INDEX last_update_time (last_update_time),
  INDEX last_call_finish (last_call_finish),
  INDEX vlali (lead_id),
  INDEX vlaus (user)
) ENGINE={engine}
"""

# The dialer's tables, whose lead_id marks a lead queued or in a call.
DIALER_DDL = (HOPPER_DDL, AUTO_CALLS_DDL, LIVE_AGENTS_DDL)
IN_USE_DDL = DIALER_DDL  # the name other modules import

# Scheduled callbacks: ACTIVE = scheduled, LIVE = due and being worked, INACTIVE = done.
CALLBACKS_DDL = """
CREATE TABLE vicidial_callbacks (
  callback_id INT(9) UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  lead_id INT(9) UNSIGNED,
  list_id BIGINT(14) UNSIGNED,
  campaign_id VARCHAR(8),
  status VARCHAR(10),
  entry_time DATETIME,
  callback_time DATETIME,
  modify_date TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  user VARCHAR(20),
  recipient ENUM('USERONLY','ANYONE'),
  comments VARCHAR(255),
  user_group VARCHAR(20),
  lead_status VARCHAR(6) DEFAULT 'CALLBK',
  email_alert DATETIME,
  email_result ENUM('SENT','FAILED','NOT AVAILABLE'),
  customer_timezone VARCHAR(100) DEFAULT '',
  customer_timezone_diff VARCHAR(6) DEFAULT '',
  customer_time DATETIME,
  INDEX lead_id (lead_id),
  INDEX status (status),
  INDEX callback_time (callback_time)
) ENGINE={engine}
"""

# Vicidial's own recipe, as for vicidial_list_archive: same columns and indexes, no
# AUTO_INCREMENT. The Non-Agent API's lead delete moves a lead's callbacks here first.
CALLBACKS_ARCHIVE_RECIPE = (
    "CREATE TABLE vicidial_callbacks_archive LIKE vicidial_callbacks",
    "ALTER TABLE vicidial_callbacks_archive MODIFY callback_id INT(9) UNSIGNED NOT NULL",
)

ADMIN_LOG_DDL = """
CREATE TABLE vicidial_admin_log (
  admin_log_id INT(9) UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  event_date DATETIME NOT NULL,
  user VARCHAR(20) NOT NULL,
  ip_address VARCHAR(15) NOT NULL,
  event_section VARCHAR(30) NOT NULL,
  event_type ENUM('ADD','COPY','LOAD','RESET','MODIFY','DELETE','SEARCH','LOGIN','LOGOUT',
                  'CLEAR','OVERRIDE','EXPORT','OTHER') DEFAULT 'OTHER',
  record_id VARCHAR(50) NOT NULL,
  event_code VARCHAR(255) NOT NULL,
  event_sql MEDIUMTEXT,
  event_notes MEDIUMTEXT,
  user_group VARCHAR(20) DEFAULT '---ALL---',
  INDEX user (user),
  INDEX event_section (event_section),
  INDEX record_id (record_id)
) ENGINE={engine}
"""

# The lists leads belong to. An inactive list (active='N') is never dialed.
LISTS_DDL = """
CREATE TABLE vicidial_lists (
  list_id BIGINT(14) UNSIGNED NOT NULL PRIMARY KEY,
  list_name VARCHAR(30),
  campaign_id VARCHAR(8),
  active ENUM('Y','N'),
  list_description VARCHAR(255),
  list_changedate DATETIME,
  list_lastcalldate DATETIME,
  reset_time VARCHAR(100) DEFAULT '',
  agent_script_override VARCHAR(20) DEFAULT '',
  campaign_cid_override VARCHAR(20) DEFAULT '',
  am_message_exten_override VARCHAR(100) DEFAULT '',
  drop_inbound_group_override VARCHAR(20) DEFAULT '',
  xferconf_a_number VARCHAR(50) DEFAULT '',
  xferconf_b_number VARCHAR(50) DEFAULT '',
  xferconf_c_number VARCHAR(50) DEFAULT '',
  xferconf_d_number VARCHAR(50) DEFAULT '',
  xferconf_e_number VARCHAR(50) DEFAULT '',
  web_form_address TEXT,
  web_form_address_two TEXT,
  time_zone_setting ENUM('COUNTRY_AND_AREA_CODE','POSTAL_CODE','NANPA_PREFIX',
                         'OWNER_TIME_ZONE_CODE') DEFAULT 'COUNTRY_AND_AREA_CODE',
  inventory_report ENUM('Y','N') DEFAULT 'Y',
  expiration_date DATE DEFAULT '2099-12-31',
  na_call_url TEXT,
  local_call_time VARCHAR(10) NOT NULL DEFAULT 'campaign',
  web_form_address_three TEXT,
  status_group_id VARCHAR(20) DEFAULT '',
  user_new_lead_limit SMALLINT(5) DEFAULT '-1',
  inbound_list_script_override VARCHAR(20),
  default_xfer_group VARCHAR(20) DEFAULT '---NONE---',
  daily_reset_limit SMALLINT(5) DEFAULT '-1',
  resets_today SMALLINT(5) UNSIGNED DEFAULT '0',
  auto_active_list_rank SMALLINT(5) DEFAULT '0',
  cache_count INT(9) UNSIGNED DEFAULT '0',
  cache_count_new INT(9) UNSIGNED DEFAULT '0',
  cache_count_dialable_new INT(9) UNSIGNED DEFAULT '0',
  cache_date DATETIME,
  inbound_drop_voicemail VARCHAR(20),
  inbound_after_hours_voicemail VARCHAR(20),
  qc_scorecard_id VARCHAR(20) DEFAULT '',
  qc_statuses_id VARCHAR(20) DEFAULT '',
  qc_web_form_address VARCHAR(255) DEFAULT '',
  auto_alt_threshold TINYINT(3) DEFAULT '-1',
  cid_group_id VARCHAR(20) DEFAULT '---DISABLED---',
  dial_prefix VARCHAR(20) DEFAULT '',
  weekday_resets_container VARCHAR(40) DEFAULT 'DISABLED'
) ENGINE={engine}
"""

CALLBACKS_TABLE = "vicidial_callbacks"
CALLBACKS_ARCHIVE_TABLE = "vicidial_callbacks_archive"

# Every table create_vicidial_tables makes, in an order DROP TABLE accepts.
ALL_TABLES = (
    ARCHIVE_TABLE,
    LIVE_TABLE,
    "vicidial_hopper",
    "vicidial_auto_calls",
    "vicidial_live_agents",
    CALLBACKS_ARCHIVE_TABLE,
    CALLBACKS_TABLE,
    "vicidial_admin_log",
    "vicidial_lists",
)


_SQLITE_REWRITES = (
    # The embedded default's SQLite has no engines, unsigned types, ENUMs or ON UPDATE; it takes
    # MySQL's other type names (TINYINT(1), MEDIUMTEXT, DECIMAL(4,2)...) and defaults as they are.
    (re.compile(r"INT\(9\) UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY"), "INTEGER PRIMARY KEY"),
    (re.compile(r"INT\(9\) UNSIGNED NOT NULL PRIMARY KEY"), "INTEGER PRIMARY KEY"),
    (re.compile(r" UNSIGNED"), ""),
    (re.compile(r"ENUM\([^)]*\)"), "TEXT"),
    (re.compile(r" ON UPDATE CURRENT_TIMESTAMP"), ""),
    (re.compile(r"\) ENGINE=\S+"), ")"),
)


def sqlite_ddl(mysql_ddl: str) -> str:
    """This module's MySQL DDL as SQLite DDL: same tables, columns and column names."""
    # Secondary indexes are left out: the demo's tables are small.
    lines = [line for line in mysql_ddl.splitlines() if not line.strip().startswith("INDEX ")]
    ddl = re.sub(r",\s*\n\)", "\n)", "\n".join(lines))
    for pattern, replacement in _SQLITE_REWRITES:
        ddl = pattern.sub(replacement, ddl)
    return ddl


def _renamed(ddl: str, table: str, name: str) -> str:
    """``ddl``'s table under another name (SQLite has no CREATE TABLE ... LIKE)."""
    return ddl.replace(f"CREATE TABLE {table} (", f"CREATE TABLE {name} (")


def mysql_statements(engine: str = "MyISAM", archive: bool = True) -> list[str]:
    """Every statement that makes Vicidial's tables on MySQL/MariaDB, in the order they run.

    ``engine`` is the engine of every table Vicidial declares MyISAM; the hopper and the
    auto-calls table are MEMORY whatever it is, as on a Vicidial server.
    """
    if engine not in ("MyISAM", "InnoDB", "Aria"):
        raise ValueError(f"unsupported engine {engine!r}")
    ddl = (VICIDIAL_LIST_DDL, *DIALER_DDL, CALLBACKS_DDL, ADMIN_LOG_DDL, LISTS_DDL)
    statements = [d.format(engine=engine).strip() for d in ddl]
    statements += CALLBACKS_ARCHIVE_RECIPE
    if archive:
        statements += ARCHIVE_RECIPE
    return statements


def create_vicidial_tables(conn: Connection, engine: str = "MyISAM", archive: bool = True) -> None:
    """Create Vicidial's lead tables (and the archive, by Vicidial's recipe) on ``engine``."""
    if conn.dialect.name == "sqlite":
        for ddl in (VICIDIAL_LIST_DDL, *DIALER_DDL, CALLBACKS_DDL, ADMIN_LOG_DDL, LISTS_DDL):
            conn.exec_driver_sql(sqlite_ddl(ddl))
        conn.exec_driver_sql(
            _renamed(sqlite_ddl(CALLBACKS_DDL), CALLBACKS_TABLE, CALLBACKS_ARCHIVE_TABLE)
        )
        if archive:
            conn.exec_driver_sql(_renamed(sqlite_ddl(VICIDIAL_LIST_DDL), LIVE_TABLE, ARCHIVE_TABLE))
        return
    for statement in mysql_statements(engine, archive):
        conn.exec_driver_sql(statement)


def create_archive_table(conn: Connection) -> None:
    """Run Vicidial's own recipe for ``vicidial_list_archive``."""
    for statement in ARCHIVE_RECIPE:
        conn.exec_driver_sql(statement)


def drop_vicidial_tables(conn: Connection) -> None:
    """Drop every table ``create_vicidial_tables`` makes (tests and the demo only)."""
    if conn.dialect.name == "sqlite":  # one table per DROP TABLE there
        for table in ALL_TABLES:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        return
    conn.exec_driver_sql("DROP TABLE IF EXISTS " + ", ".join(ALL_TABLES))
