//! The schema's versioned migrations: frozen history. A migration, once released, never
//! changes: add one. New migrations hold tables and data only; the stored procedures are
//! defined once, in [`super::procs`]. Those released before it also created procedures with
//! fixed names (the texts below, kept as they ran); nothing calls those any more.

/// The schema's migrations, in order. A migration, once released, never changes: add one.
pub const MIGRATIONS: &[(u32, &str, &[&str])] = &[
    (
        1,
        "sessions, their history, hosts, idempotency keys",
        &[
            "CREATE TABLE IF NOT EXISTS sessions (
            seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            session_id VARCHAR(128) NOT NULL,
            game_id VARCHAR(128) NOT NULL,
            mode VARCHAR(255) NOT NULL,
            config VARCHAR(255) NULL,
            status VARCHAR(16) NOT NULL,
            host_id VARCHAR(128) NOT NULL,
            ip VARCHAR(45) NULL,
            port INT UNSIGNED NULL,
            pid INT UNSIGNED NULL,
            created_at DATETIME(6) NOT NULL,
            started_at DATETIME(6) NULL,
            ended_at DATETIME(6) NULL,
            end_reason VARCHAR(32) NULL,
            exit_code INT NULL,
            UNIQUE KEY sessions_session_id (session_id),
            KEY sessions_status (status, seq),
            KEY sessions_game (game_id, seq),
            KEY sessions_host (host_id, seq),
            KEY sessions_addr (ip, pid)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS session_events (
            id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            session_id VARCHAR(128) NOT NULL,
            at DATETIME(6) NOT NULL,
            event VARCHAR(32) NOT NULL,
            status VARCHAR(16) NOT NULL,
            actor VARCHAR(16) NOT NULL,
            KEY session_events_session (session_id, id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS hosts (
            host_id VARCHAR(128) NOT NULL PRIMARY KEY,
            drained BOOLEAN NOT NULL DEFAULT FALSE,
            facts TEXT NULL,
            last_seen DATETIME(6) NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS idempotency_keys (
            idem_key VARCHAR(255) NOT NULL PRIMARY KEY,
            request TEXT NOT NULL,
            session_id VARCHAR(128) NOT NULL,
            created_at DATETIME(6) NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        ],
    ),
    (
        2,
        "one round trip per session change: arcade_insert_session, arcade_transition",
        &[
            "DROP PROCEDURE IF EXISTS arcade_insert_session",
            PROC_INSERT_SESSION,
            "DROP PROCEDURE IF EXISTS arcade_transition",
            PROC_TRANSITION,
        ],
    ),
    (
        3,
        "replicas: host owners and epochs, brokers, leases, claims, fenced transitions",
        &[
            // Plain ADD COLUMN (MySQL 8 has no IF NOT EXISTS here): this migration's statements
            // are not idempotent; a broker killed in the middle of it leaves the columns to drop
            // by hand. The other statements are.
            "ALTER TABLE hosts ADD COLUMN owner VARCHAR(128) NULL, \
             ADD COLUMN epoch BIGINT UNSIGNED NOT NULL DEFAULT 0, \
             ADD COLUMN ready BOOLEAN NOT NULL DEFAULT FALSE, \
             ADD COLUMN max_sessions INT UNSIGNED NOT NULL DEFAULT 0",
            "CREATE INDEX sessions_host_status ON sessions (host_id, status)",
            "CREATE TABLE IF NOT EXISTS brokers (
            broker_id VARCHAR(128) NOT NULL PRIMARY KEY,
            address VARCHAR(255) NOT NULL,
            last_seen DATETIME(6) NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS leases (
            name VARCHAR(64) NOT NULL PRIMARY KEY,
            holder VARCHAR(128) NOT NULL,
            expires_at DATETIME(6) NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "DROP PROCEDURE IF EXISTS arcade_claim_session",
            PROC_CLAIM_SESSION,
            "DROP PROCEDURE IF EXISTS arcade_transition_fenced",
            PROC_TRANSITION_FENCED,
        ],
    ),
    (
        4,
        "replicas: each host's load, as its owner last heard it",
        &[
            "ALTER TABLE hosts ADD COLUMN cpu_percent FLOAT NOT NULL DEFAULT 0, \
             ADD COLUMN mem_used_bytes BIGINT UNSIGNED NOT NULL DEFAULT 0",
        ],
    ),
    (
        5,
        "the event stream: gapless sequence, events written with each change",
        &[
            "CREATE TABLE IF NOT EXISTS stream_events (
            seq BIGINT UNSIGNED NOT NULL PRIMARY KEY,
            at DATETIME(6) NOT NULL,
            type VARCHAR(32) NOT NULL,
            actor VARCHAR(16) NOT NULL,
            session_id VARCHAR(128) NULL,
            host_id VARCHAR(128) NULL,
            body MEDIUMTEXT NOT NULL,
            KEY stream_events_at (at)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS stream_seq (
            id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
            n BIGINT UNSIGNED NOT NULL
        ) ENGINE=InnoDB",
            "INSERT IGNORE INTO stream_seq (id, n) VALUES (1, 0)",
            "DROP PROCEDURE IF EXISTS arcade_append_event",
            PROC_APPEND_EVENT,
            "DROP PROCEDURE IF EXISTS arcade_insert_session",
            PROC_INSERT_SESSION_V5,
            "DROP PROCEDURE IF EXISTS arcade_transition",
            PROC_TRANSITION_V5,
            "DROP PROCEDURE IF EXISTS arcade_transition_fenced",
            PROC_TRANSITION_FENCED_V5,
            "DROP PROCEDURE IF EXISTS arcade_claim_session",
            PROC_CLAIM_SESSION_V5,
        ],
    ),
    (
        6,
        "webhooks: each receiver's cursor in the event stream",
        &["CREATE TABLE IF NOT EXISTS webhook_cursors (
            endpoint VARCHAR(512) NOT NULL PRIMARY KEY,
            seq BIGINT UNSIGNED NOT NULL,
            updated_at DATETIME(6) NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"],
    ),
    (
        7,
        "known games: every game any host has offered, so a start of one whose hosts are all \
         offline is a 503, not a 404",
        &["CREATE TABLE IF NOT EXISTS known_games (
            game_id VARCHAR(128) NOT NULL PRIMARY KEY,
            first_offered_at DATETIME(6) NOT NULL,
            last_offered_at DATETIME(6) NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"],
    ),
    (
        8,
        "pools: a ready game holds its host's slot in claims",
        &[
            "DROP PROCEDURE IF EXISTS arcade_claim_session",
            PROC_CLAIM_SESSION_V8,
        ],
    ),
    (
        9,
        "pools: the pools, each session's pool, the claim of a ready session",
        &[
            "CREATE TABLE IF NOT EXISTS pools (
            pool_id VARCHAR(128) NOT NULL PRIMARY KEY,
            game_id VARCHAR(128) NOT NULL,
            mode VARCHAR(255) NULL,
            config VARCHAR(255) NULL,
            size INT UNSIGNED NOT NULL,
            max_age_s BIGINT UNSIGNED NOT NULL,
            version BIGINT UNSIGNED NOT NULL,
            claims BIGINT UNSIGNED NOT NULL DEFAULT 0,
            misses BIGINT UNSIGNED NOT NULL DEFAULT 0,
            failures BIGINT UNSIGNED NOT NULL DEFAULT 0,
            last_error VARCHAR(1024) NULL,
            updated_at DATETIME(6) NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            // Not idempotent, like migration 3's: a broker killed between this and the
            // migration's record leaves the column to drop by hand.
            "ALTER TABLE sessions ADD COLUMN pool_id VARCHAR(128) NULL",
            "CREATE INDEX sessions_pool ON sessions (pool_id, status, seq)",
            "DROP PROCEDURE IF EXISTS arcade_insert_session",
            PROC_INSERT_SESSION_V9,
            "DROP PROCEDURE IF EXISTS arcade_claim_session",
            PROC_CLAIM_SESSION_V9,
            "DROP PROCEDURE IF EXISTS arcade_claim_ready",
            PROC_CLAIM_READY,
        ],
    ),
    (
        10,
        "per-session settings, ports and users",
        &[
            // Not idempotent, like migration 3's.
            "ALTER TABLE sessions ADD COLUMN settings TEXT NULL, \
             ADD COLUMN ports VARCHAR(128) NULL, ADD COLUMN user_id VARCHAR(128) NULL",
            "CREATE INDEX sessions_user ON sessions (user_id, status)",
            "DROP PROCEDURE IF EXISTS arcade_insert_session",
            PROC_INSERT_SESSION_V10,
            "DROP PROCEDURE IF EXISTS arcade_claim_session",
            PROC_CLAIM_SESSION_V10,
            "DROP PROCEDURE IF EXISTS arcade_transition",
            PROC_TRANSITION_V10,
            "DROP PROCEDURE IF EXISTS arcade_transition_fenced",
            PROC_TRANSITION_FENCED_V10,
        ],
    ),
    (
        11,
        "quotas: a claimed pool game becomes its player's; replicas count users' sessions",
        &[
            "CREATE TABLE IF NOT EXISTS user_locks (
            user_id VARCHAR(128) NOT NULL PRIMARY KEY
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "DROP PROCEDURE IF EXISTS arcade_claim_ready",
            PROC_CLAIM_READY_V11,
            "DROP PROCEDURE IF EXISTS arcade_claim_session",
            PROC_CLAIM_SESSION_V11,
        ],
    ),
    (
        12,
        "session limits: each session's max duration, notices sent once; pools' settings",
        &[
            // Not idempotent, like migration 3's.
            "ALTER TABLE sessions ADD COLUMN max_duration_s INT UNSIGNED NULL",
            "ALTER TABLE pools ADD COLUMN settings TEXT NULL",
            "CREATE TABLE IF NOT EXISTS session_notices (
            session_id VARCHAR(128) NOT NULL,
            type VARCHAR(32) NOT NULL,
            at DATETIME(6) NOT NULL,
            PRIMARY KEY (session_id, type),
            KEY session_notices_at (at)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "DROP PROCEDURE IF EXISTS arcade_insert_session",
            PROC_INSERT_SESSION_V12,
            "DROP PROCEDURE IF EXISTS arcade_claim_session",
            PROC_CLAIM_SESSION_V12,
            "DROP PROCEDURE IF EXISTS arcade_claim_ready",
            PROC_CLAIM_READY_V12,
        ],
    ),
    (
        13,
        "a failed start forgets its key: idempotency keys found by session",
        // Not idempotent, like migration 3's (MySQL 8 has no CREATE INDEX IF NOT EXISTS).
        &["CREATE INDEX idempotency_keys_session ON idempotency_keys (session_id)"],
    ),
    (
        14,
        "a lease's epoch, one more at each new holder: it fences the holder's writes",
        // Not idempotent, like migration 3's (MySQL 8 has no ADD COLUMN IF NOT EXISTS).
        &["ALTER TABLE leases ADD COLUMN epoch BIGINT UNSIGNED NOT NULL DEFAULT 0"],
    ),
    (
        15,
        "join tokens, kept as hashes; the store's secrets (game keys)",
        &[
            "CREATE TABLE IF NOT EXISTS session_joins (
            session_id VARCHAR(128) NOT NULL PRIMARY KEY,
            token_hash BINARY(32) NOT NULL,
            sealed BINARY(16) NULL,
            expires_at DATETIME(6) NOT NULL,
            used_at DATETIME(6) NULL,
            KEY session_joins_expires (expires_at)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS store_secrets (
            name VARCHAR(64) NOT NULL PRIMARY KEY,
            value VARBINARY(64) NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        ],
    ),
    (
        16,
        "builds: immutable, named by their sha256",
        &["CREATE TABLE IF NOT EXISTS builds (
            build CHAR(64) NOT NULL PRIMARY KEY,
            size BIGINT UNSIGNED NOT NULL,
            kind VARCHAR(8) NOT NULL,
            created_at DATETIME(6) NOT NULL,
            KEY builds_created (created_at)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"],
    ),
    (
        17,
        "central games: catalog entries kept by the broker, with their builds",
        &["CREATE TABLE IF NOT EXISTS central_games (
            game_id VARCHAR(128) NOT NULL PRIMARY KEY,
            entry MEDIUMTEXT NOT NULL,
            build CHAR(64) NOT NULL,
            previous_build CHAR(64) NULL,
            version BIGINT UNSIGNED NOT NULL,
            updated_at DATETIME(6) NOT NULL,
            KEY central_games_build (build),
            KEY central_games_previous (previous_build)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"],
    ),
    (
        18,
        "the build each session runs (a central game's), counted by rollouts",
        &[
            "ALTER TABLE sessions ADD COLUMN build CHAR(64) NULL",
            "CREATE INDEX sessions_build ON sessions (build, created_at)",
        ],
    ),
    (
        19,
        "central games' rollouts, and the entry that ran the previous build",
        &[
            "ALTER TABLE central_games ADD COLUMN previous_entry MEDIUMTEXT NULL, \
           ADD COLUMN rollout MEDIUMTEXT NULL",
        ],
    ),
    (
        20,
        "what each session holds of its host (slots, GPUs) and the host's labels; usage by window",
        &[
            "ALTER TABLE sessions ADD COLUMN slots INT UNSIGNED NOT NULL DEFAULT 1, \
           ADD COLUMN gpus VARCHAR(1024) NULL, \
           ADD COLUMN gpu_count INT UNSIGNED NOT NULL DEFAULT 0, \
           ADD COLUMN labels TEXT NULL, \
           ADD COLUMN unclaimed BOOLEAN NOT NULL DEFAULT FALSE",
            // A pool's game never claimed by a player never ran for anyone: not usage.
            "UPDATE sessions s SET unclaimed = TRUE WHERE s.pool_id IS NOT NULL \
           AND NOT EXISTS (SELECT 1 FROM session_events e \
             WHERE e.session_id = s.session_id AND e.event = 'claimed')",
            // `GET /v1/usage`: sessions that ended after the window began (or run still), read
            // from the index alone.
            "CREATE INDEX sessions_usage ON sessions \
           (ended_at, started_at, unclaimed, gpu_count, user_id, game_id, host_id)",
        ],
    ),
    (
        21,
        "a counter each claim writes on its host's and its user's row (Galera: claims conflict)",
        &[
            // A claim counts a host's (or user's) live sessions under a lock on its row. On a
            // Galera cluster a lock is its node's only: a claim on another node may count at
            // the same moment. Writing the row first makes two such claims conflict, and
            // Galera commits only one of them.
            "ALTER TABLE hosts ADD COLUMN claims BIGINT UNSIGNED NOT NULL DEFAULT 0",
            "ALTER TABLE user_locks ADD COLUMN claims BIGINT UNSIGNED NOT NULL DEFAULT 0",
        ],
    ),
];

// The procedures migrations 2 to 12 created, as they ran. Their current definitions, and why
// there are procedures at all, are in `procs`.

/// Inserts a session and its first one or two events (the second's name NULL: none), and
/// commits.
const PROC_INSERT_SESSION: &str = "CREATE PROCEDURE arcade_insert_session(
    IN p_session_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_game_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_mode VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_config VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_status VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_host_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_ip VARCHAR(45) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_port INT UNSIGNED,
    IN p_pid INT UNSIGNED,
    IN p_created_at DATETIME(6),
    IN p_started_at DATETIME(6),
    IN p_ended_at DATETIME(6),
    IN p_end_reason VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_exit_code INT,
    IN p_event VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_event_status VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_event_at DATETIME(6),
    IN p_actor VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_event2 VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_event2_status VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_event2_at DATETIME(6),
    IN p_actor2 VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin)
BEGIN
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    START TRANSACTION;
    INSERT INTO sessions (session_id, game_id, mode, config, status, host_id, ip, port, pid,
        created_at, started_at, ended_at, end_reason, exit_code)
    VALUES (p_session_id, p_game_id, p_mode, p_config, p_status, p_host_id, p_ip, p_port, p_pid,
        p_created_at, p_started_at, p_ended_at, p_end_reason, p_exit_code);
    INSERT INTO session_events (session_id, at, event, status, actor)
    VALUES (p_session_id, p_event_at, p_event, p_event_status, p_actor);
    IF p_event2 IS NOT NULL THEN
        INSERT INTO session_events (session_id, at, event, status, actor)
        VALUES (p_session_id, p_event2_at, p_event2, p_event2_status, p_actor2);
    END IF;
    COMMIT;
END";

/// Locks the session's row; if its status is still `p_from`, writes the new state and the
/// event and commits. Answers one row: whether it applied, and the status it found (NULL:
/// no such session).
const PROC_TRANSITION: &str = "CREATE PROCEDURE arcade_transition(
    IN p_session_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_from VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_status VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_ip VARCHAR(45) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_port INT UNSIGNED,
    IN p_pid INT UNSIGNED,
    IN p_started_at DATETIME(6),
    IN p_ended_at DATETIME(6),
    IN p_end_reason VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_exit_code INT,
    IN p_at DATETIME(6),
    IN p_event VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_actor VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin)
BEGIN
    DECLARE v_found VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_found = NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    START TRANSACTION;
    SELECT status INTO v_found FROM sessions WHERE session_id = p_session_id FOR UPDATE;
    IF v_found = p_from THEN
        UPDATE sessions SET status = p_status, ip = p_ip, port = p_port, pid = p_pid,
            started_at = p_started_at, ended_at = p_ended_at, end_reason = p_end_reason,
            exit_code = p_exit_code
        WHERE session_id = p_session_id;
        INSERT INTO session_events (session_id, at, event, status, actor)
        VALUES (p_session_id, p_at, p_event, p_status, p_actor);
        COMMIT;
        SELECT 1, v_found;
    ELSE
        ROLLBACK;
        SELECT 0, v_found;
    END IF;
END";

/// Claims a slot on a host and records the session in it, in one transaction under READ
/// COMMITTED: locks the host's row, checks that it has an owner, is ready and not drained, and
/// counts its live sessions against its `max_sessions`; then binds the `Idempotency-Key` (when
/// given; a duplicate raises error 1062, which the caller reads as "taken") and inserts the
/// session and its first event. Answers one row: `new`, `full` or `gone`, and the host's epoch.
/// Concurrent claims of one host queue on its row lock, so the count is exact; MariaDB's
/// default REPEATABLE READ would take gap locks on the count and deadlock them instead.
const PROC_CLAIM_SESSION: &str = "CREATE PROCEDURE arcade_claim_session(
    IN p_session_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_game_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_mode VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_config VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_status VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_host_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_created_at DATETIME(6),
    IN p_actor VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_key VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_request TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_key_expired DATETIME(6))
BEGIN
    DECLARE v_max INT UNSIGNED DEFAULT NULL;
    DECLARE v_owner VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL;
    DECLARE v_ready BOOLEAN DEFAULT FALSE;
    DECLARE v_drained BOOLEAN DEFAULT TRUE;
    DECLARE v_epoch BIGINT UNSIGNED DEFAULT 0;
    DECLARE v_used INT UNSIGNED DEFAULT 0;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_max = NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT max_sessions, owner, ready, drained, epoch
        INTO v_max, v_owner, v_ready, v_drained, v_epoch
        FROM hosts WHERE host_id = p_host_id FOR UPDATE;
    IF v_max IS NULL OR v_owner IS NULL OR NOT v_ready OR v_drained THEN
        ROLLBACK;
        SELECT 'gone', 0;
    ELSE
        SELECT COUNT(*) INTO v_used FROM sessions
            WHERE host_id = p_host_id AND status IN ('starting', 'running', 'stopping');
        IF v_used >= v_max THEN
            ROLLBACK;
            SELECT 'full', v_epoch;
        ELSE
            IF p_key IS NOT NULL THEN
                DELETE FROM idempotency_keys WHERE idem_key = p_key AND created_at < p_key_expired;
                INSERT INTO idempotency_keys (idem_key, request, session_id, created_at)
                VALUES (p_key, p_request, p_session_id, p_created_at);
            END IF;
            INSERT INTO sessions (session_id, game_id, mode, config, status, host_id,
                created_at)
            VALUES (p_session_id, p_game_id, p_mode, p_config, p_status, p_host_id,
                p_created_at);
            INSERT INTO session_events (session_id, at, event, status, actor)
            VALUES (p_session_id, p_created_at, 'created', p_status, p_actor);
            COMMIT;
            SELECT 'new', v_epoch;
        END IF;
    END IF;
END";

/// `arcade_transition` for a write about a host made by its owner: it applies only while the
/// host's epoch is still `p_epoch` (the owner's connection is the newest), read under a shared
/// lock so a new connection's claim waits for it or it sees the claim. Answers one row: 1
/// applied, 0 changed meanwhile (or no such session: the status found is NULL), 2 fenced (the
/// host moved on).
const PROC_TRANSITION_FENCED: &str = "CREATE PROCEDURE arcade_transition_fenced(
    IN p_session_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_from VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_status VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_ip VARCHAR(45) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_port INT UNSIGNED,
    IN p_pid INT UNSIGNED,
    IN p_started_at DATETIME(6),
    IN p_ended_at DATETIME(6),
    IN p_end_reason VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_exit_code INT,
    IN p_at DATETIME(6),
    IN p_event VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_actor VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_host_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_epoch BIGINT UNSIGNED)
BEGIN
    DECLARE v_found VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL;
    DECLARE v_epoch BIGINT UNSIGNED DEFAULT NULL;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_found = NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT status INTO v_found FROM sessions WHERE session_id = p_session_id FOR UPDATE;
    SELECT epoch INTO v_epoch FROM hosts WHERE host_id = p_host_id LOCK IN SHARE MODE;
    IF v_epoch IS NULL OR v_epoch <> p_epoch THEN
        ROLLBACK;
        SELECT 2, v_found;
    ELSEIF v_found = p_from THEN
        UPDATE sessions SET status = p_status, ip = p_ip, port = p_port, pid = p_pid,
            started_at = p_started_at, ended_at = p_ended_at, end_reason = p_end_reason,
            exit_code = p_exit_code
        WHERE session_id = p_session_id;
        INSERT INTO session_events (session_id, at, event, status, actor)
        VALUES (p_session_id, p_at, p_event, p_status, p_actor);
        COMMIT;
        SELECT 1, v_found;
    ELSE
        ROLLBACK;
        SELECT 0, v_found;
    END IF;
END";

// Migration 5: every change that makes an event appends it, in the change's own transaction,
// through `arcade_append_event`. Its sequence number comes from one counter row, taken last
// before the commit: the row's lock orders the events' commits, so the numbers commit in
// order and without a gap (a rolled-back change gives its number back). An AUTO_INCREMENT
// would not do: it is assigned at insert, so a reader could see 105 before 104 commits and
// skip 104. The lock is held only from the append to the commit.

/// Appends one event, numbered next; runs inside its caller's transaction.
const PROC_APPEND_EVENT: &str = "CREATE PROCEDURE arcade_append_event(
    IN p_at DATETIME(6),
    IN p_type VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_actor VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_session_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_host_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_body MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin)
BEGIN
    UPDATE stream_seq SET n = LAST_INSERT_ID(n + 1) WHERE id = 1;
    INSERT INTO stream_events (seq, at, type, actor, session_id, host_id, body)
    VALUES (LAST_INSERT_ID(), p_at, p_type, p_actor, p_session_id, p_host_id, p_body);
END";

/// `arcade_insert_session` with each event's stream type and body (the session after it),
/// and from version 9 the session's pool (`$param`, `$column` and `$value` add it).
macro_rules! insert_session_proc {
    ($param:literal, $column:literal, $value:literal) => {
        concat!(
            "CREATE PROCEDURE arcade_insert_session(
    IN p_session_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_game_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_mode VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_config VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_status VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_host_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_ip VARCHAR(45) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_port INT UNSIGNED,
    IN p_pid INT UNSIGNED,
    IN p_created_at DATETIME(6),
    IN p_started_at DATETIME(6),
    IN p_ended_at DATETIME(6),
    IN p_end_reason VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_exit_code INT,
",
            $param,
            "    IN p_event VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_event_status VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_event_at DATETIME(6),
    IN p_actor VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_type VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_body MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_event2 VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_event2_status VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_event2_at DATETIME(6),
    IN p_actor2 VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_type2 VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_body2 MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin)
BEGIN
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    START TRANSACTION;
    INSERT INTO sessions (session_id, game_id, mode, config, status, host_id, ip, port, pid,
        created_at, started_at, ended_at, end_reason, exit_code",
            $column,
            ")
    VALUES (p_session_id, p_game_id, p_mode, p_config, p_status, p_host_id, p_ip, p_port, p_pid,
        p_created_at, p_started_at, p_ended_at, p_end_reason, p_exit_code",
            $value,
            ");
    INSERT INTO session_events (session_id, at, event, status, actor)
    VALUES (p_session_id, p_event_at, p_event, p_event_status, p_actor);
    IF p_event2 IS NOT NULL THEN
        INSERT INTO session_events (session_id, at, event, status, actor)
        VALUES (p_session_id, p_event2_at, p_event2, p_event2_status, p_actor2);
    END IF;
    CALL arcade_append_event(p_event_at, p_type, p_actor, p_session_id, p_host_id, p_body);
    IF p_type2 IS NOT NULL THEN
        CALL arcade_append_event(p_event2_at, p_type2, p_actor2, p_session_id, p_host_id,
            p_body2);
    END IF;
    COMMIT;
END"
        )
    };
}

const PROC_INSERT_SESSION_V5: &str = insert_session_proc!("", "", "");
/// Version 9: with the session's pool.
const PROC_INSERT_SESSION_V9: &str = insert_session_proc!(
    "    IN p_pool_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,\n",
    ", pool_id",
    ", p_pool_id"
);

/// `arcade_transition` that also appends the change's stream event (`p_type` NULL: none, the
/// status did not change).
macro_rules! transition_proc {
    ($param:literal, $set:literal) => {
        concat!(
            "CREATE PROCEDURE arcade_transition(
    IN p_session_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_from VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_status VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_ip VARCHAR(45) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_port INT UNSIGNED,
    IN p_pid INT UNSIGNED,
",
            $param,
            "    IN p_started_at DATETIME(6),
    IN p_ended_at DATETIME(6),
    IN p_end_reason VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_exit_code INT,
    IN p_at DATETIME(6),
    IN p_event VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_actor VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_type VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_body MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin)
BEGIN
    DECLARE v_found VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL;
    DECLARE v_host VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_found = NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    START TRANSACTION;
    SELECT status, host_id INTO v_found, v_host FROM sessions
        WHERE session_id = p_session_id FOR UPDATE;
    IF v_found = p_from THEN
        UPDATE sessions SET status = p_status, ip = p_ip, port = p_port, pid = p_pid,",
            $set,
            "
            started_at = p_started_at, ended_at = p_ended_at, end_reason = p_end_reason,
            exit_code = p_exit_code
        WHERE session_id = p_session_id;
        INSERT INTO session_events (session_id, at, event, status, actor)
        VALUES (p_session_id, p_at, p_event, p_status, p_actor);
        IF p_type IS NOT NULL THEN
            CALL arcade_append_event(p_at, p_type, p_actor, p_session_id, v_host, p_body);
        END IF;
        COMMIT;
        SELECT 1, v_found;
    ELSE
        ROLLBACK;
        SELECT 0, v_found;
    END IF;
END"
        )
    };
}

const PROC_TRANSITION_V5: &str = transition_proc!("", "");

/// `arcade_transition_fenced` that also appends the change's stream event.
macro_rules! transition_fenced_proc {
    ($param:literal, $set:literal) => {
        concat!(
            "CREATE PROCEDURE arcade_transition_fenced(
    IN p_session_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_from VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_status VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_ip VARCHAR(45) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_port INT UNSIGNED,
    IN p_pid INT UNSIGNED,
",
            $param,
            "    IN p_started_at DATETIME(6),
    IN p_ended_at DATETIME(6),
    IN p_end_reason VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_exit_code INT,
    IN p_at DATETIME(6),
    IN p_event VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_actor VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_type VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_body MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_host_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_epoch BIGINT UNSIGNED)
BEGIN
    DECLARE v_found VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL;
    DECLARE v_epoch BIGINT UNSIGNED DEFAULT NULL;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_found = NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT status INTO v_found FROM sessions WHERE session_id = p_session_id FOR UPDATE;
    SELECT epoch INTO v_epoch FROM hosts WHERE host_id = p_host_id LOCK IN SHARE MODE;
    IF v_epoch IS NULL OR v_epoch <> p_epoch THEN
        ROLLBACK;
        SELECT 2, v_found;
    ELSEIF v_found = p_from THEN
        UPDATE sessions SET status = p_status, ip = p_ip, port = p_port, pid = p_pid,",
            $set,
            "
            started_at = p_started_at, ended_at = p_ended_at, end_reason = p_end_reason,
            exit_code = p_exit_code
        WHERE session_id = p_session_id;
        INSERT INTO session_events (session_id, at, event, status, actor)
        VALUES (p_session_id, p_at, p_event, p_status, p_actor);
        IF p_type IS NOT NULL THEN
            CALL arcade_append_event(p_at, p_type, p_actor, p_session_id, p_host_id, p_body);
        END IF;
        COMMIT;
        SELECT 1, v_found;
    ELSE
        ROLLBACK;
        SELECT 0, v_found;
    END IF;
END"
        )
    };
}

const PROC_TRANSITION_FENCED_V5: &str = transition_fenced_proc!("", "");

/// `arcade_claim_session` that also appends `session.created`, with the statuses that hold a
/// host's slot and (from version 9) the session's pool.
macro_rules! claim_session_proc {
    ($live:literal, $param:literal, $column:literal, $value:literal, $declare:expr, $check:expr, $end:expr) => {
        concat!(
            "CREATE PROCEDURE arcade_claim_session(
    IN p_session_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_game_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_mode VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_config VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_status VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_host_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_created_at DATETIME(6),
    IN p_actor VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_key VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_request TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_key_expired DATETIME(6),
    IN p_body MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            $param,
            ")
BEGIN
    DECLARE v_max INT UNSIGNED DEFAULT NULL;
    DECLARE v_owner VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL;
    DECLARE v_ready BOOLEAN DEFAULT FALSE;
    DECLARE v_drained BOOLEAN DEFAULT TRUE;
    DECLARE v_epoch BIGINT UNSIGNED DEFAULT 0;
    DECLARE v_used INT UNSIGNED DEFAULT 0;
",
            $declare,
            "    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_max = NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
",
            $check,
            "    SELECT max_sessions, owner, ready, drained, epoch
        INTO v_max, v_owner, v_ready, v_drained, v_epoch
        FROM hosts WHERE host_id = p_host_id FOR UPDATE;
    IF v_max IS NULL OR v_owner IS NULL OR NOT v_ready OR v_drained THEN
        ROLLBACK;
        SELECT 'gone', 0;
    ELSE
        SELECT COUNT(*) INTO v_used FROM sessions
            WHERE host_id = p_host_id AND status ",
            "IN ",
            $live,
            ";
        IF v_used >= v_max THEN
            ROLLBACK;
            SELECT 'full', v_epoch;
        ELSE
            IF p_key IS NOT NULL THEN
                DELETE FROM idempotency_keys WHERE idem_key = p_key AND created_at < p_key_expired;
                INSERT INTO idempotency_keys (idem_key, request, session_id, created_at)
                VALUES (p_key, p_request, p_session_id, p_created_at);
            END IF;
            INSERT INTO sessions (session_id, game_id, mode, config, status, host_id,
                created_at",
            $column,
            ")
            VALUES (p_session_id, p_game_id, p_mode, p_config, p_status, p_host_id,
                p_created_at",
            $value,
            ");
            INSERT INTO session_events (session_id, at, event, status, actor)
            VALUES (p_session_id, p_created_at, 'created', p_status, p_actor);
            CALL arcade_append_event(p_created_at, 'session.created', p_actor, p_session_id,
                p_host_id, p_body);
            COMMIT;
            SELECT 'new', v_epoch;
        END IF;
    END IF;
",
            $end,
            "END"
        )
    };
}

const PROC_CLAIM_SESSION_V5: &str = claim_session_proc!(
    "('starting', 'running', 'stopping')",
    "",
    "",
    "",
    "",
    "",
    ""
);
/// Version 8: a pool's ready games hold their slots too.
const PROC_CLAIM_SESSION_V8: &str = claim_session_proc!(
    "('starting', 'ready', 'running', 'stopping')",
    "",
    "",
    "",
    "",
    "",
    ""
);
/// Version 9: with the session's pool.
const PROC_CLAIM_SESSION_V9: &str = claim_session_proc!(
    "('starting', 'ready', 'running', 'stopping')",
    ",\n    IN p_pool_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    ", pool_id",
    ", p_pool_id",
    "",
    "",
    ""
);

/// Takes a pool's ready session for a start, in the transaction in which the caller locked
/// its row (`SELECT ... FOR UPDATE SKIP LOCKED`): binds the `Idempotency-Key` (when given; a
/// duplicate raises error 1062, read as "taken"), writes the claim (status, `started_at`, the
/// history, the stream) and counts it on the pool, and commits.
macro_rules! claim_ready_proc {
    ($param:literal, $set:literal, $declare:expr, $check:expr, $end:expr) => {
        concat!(
            "CREATE PROCEDURE arcade_claim_ready(
    IN p_session_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_pool_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_status VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_at DATETIME(6),
    IN p_actor VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_type VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_body MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_host_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_key VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_request TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_key_expired DATETIME(6)",
            $param,
            ")
BEGIN
",
            $declare,
            "    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
",
            $check,
            "    IF p_key IS NOT NULL THEN
        DELETE FROM idempotency_keys WHERE idem_key = p_key AND created_at < p_key_expired;
        INSERT INTO idempotency_keys (idem_key, request, session_id, created_at)
        VALUES (p_key, p_request, p_session_id, p_at);
    END IF;
    UPDATE sessions SET status = p_status, started_at = p_at",
            $set,
            " WHERE session_id = p_session_id;
    INSERT INTO session_events (session_id, at, event, status, actor)
    VALUES (p_session_id, p_at, 'claimed', p_status, p_actor);
    CALL arcade_append_event(p_at, p_type, p_actor, p_session_id, p_host_id, p_body);
    UPDATE pools SET claims = claims + 1 WHERE pool_id = p_pool_id;
    COMMIT;
",
            $end,
            "END"
        )
    };
}

const PROC_CLAIM_READY: &str = claim_ready_proc!("", "", "", "", "");

// Version 11, quotas with replicas: a start naming a user, with `--max-sessions-per-user`,
// first locks the user's row of `user_locks` (made on first use) and counts the user's live
// sessions, in the transaction that records the session, so concurrent starts of one user
// through any replicas queue on that row and the count is exact. Claims lock the user after
// the host (or the pool's session): no lock is taken in the other order, so none deadlocks.

/// Declares the user's count.
macro_rules! quota_declare {
    () => {
        "    DECLARE v_mine INT UNSIGNED DEFAULT 0;\n"
    };
}
/// Locks the user and counts its sessions, then refuses (answering `quota`) or goes on.
macro_rules! quota_check {
    () => {
        "    IF p_user_id IS NOT NULL AND p_user_max IS NOT NULL THEN
        INSERT INTO user_locks (user_id) VALUES (p_user_id)
            ON DUPLICATE KEY UPDATE user_id = user_id;
        SELECT COUNT(*) INTO v_mine FROM sessions
            WHERE user_id = p_user_id AND status IN ('starting', 'ready', 'running', 'stopping');
    END IF;
    IF v_mine >= COALESCE(p_user_max, 4294967295) THEN
        ROLLBACK;
        SELECT 'quota', 0;
    ELSE
"
    };
}

/// Version 11: the claiming start's user becomes the session's, within its quota. Answers
/// `claimed` or `quota`.
const PROC_CLAIM_READY_V11: &str = claim_ready_proc!(
    ",\n    IN p_user_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_user_max INT UNSIGNED",
    ", user_id = p_user_id",
    quota_declare!(),
    quota_check!(),
    "    SELECT 'claimed', 0;\n    END IF;\n"
);
/// Version 11: a replica's claim of a slot, within the user's quota (answers `quota`).
const PROC_CLAIM_SESSION_V11: &str = claim_session_proc!(
    "('starting', 'ready', 'running', 'stopping')",
    ",\n    IN p_pool_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_settings TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_user_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_user_max INT UNSIGNED",
    ", pool_id, settings, user_id",
    ", p_pool_id, p_settings, p_user_id",
    quota_declare!(),
    quota_check!(),
    "    END IF;\n"
);

/// Version 10: the ports a game was given, written with its launch.
const PROC_TRANSITION_V10: &str = transition_proc!(
    "    IN p_ports VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,\n",
    " ports = p_ports,"
);
/// Version 10: the same for a host's owner.
const PROC_TRANSITION_FENCED_V10: &str = transition_fenced_proc!(
    "    IN p_ports VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,\n",
    " ports = p_ports,"
);
/// Version 10: with the session's settings, ports and user.
const PROC_INSERT_SESSION_V10: &str = insert_session_proc!(
    "    IN p_pool_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_settings TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_ports VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_user_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,\n",
    ", pool_id, settings, ports, user_id",
    ", p_pool_id, p_settings, p_ports, p_user_id"
);
/// Version 10: with the session's settings and user.
const PROC_CLAIM_SESSION_V10: &str = claim_session_proc!(
    "('starting', 'ready', 'running', 'stopping')",
    ",\n    IN p_pool_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_settings TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_user_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    ", pool_id, settings, user_id",
    ", p_pool_id, p_settings, p_user_id",
    "",
    "",
    ""
);

/// Version 12: with the session's max duration.
const PROC_INSERT_SESSION_V12: &str = insert_session_proc!(
    "    IN p_pool_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_settings TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_ports VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_user_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_max_duration_s INT UNSIGNED,\n",
    ", pool_id, settings, ports, user_id, max_duration_s",
    ", p_pool_id, p_settings, p_ports, p_user_id, p_max_duration_s"
);
/// Version 12: a replica's claim, with the session's max duration.
const PROC_CLAIM_SESSION_V12: &str = claim_session_proc!(
    "('starting', 'ready', 'running', 'stopping')",
    ",\n    IN p_pool_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_settings TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_user_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_user_max INT UNSIGNED,
    IN p_max_duration_s INT UNSIGNED",
    ", pool_id, settings, user_id, max_duration_s",
    ", p_pool_id, p_settings, p_user_id, p_max_duration_s",
    quota_declare!(),
    quota_check!(),
    "    END IF;\n"
);
/// Version 12: the claiming start's limit becomes the session's.
const PROC_CLAIM_READY_V12: &str = claim_ready_proc!(
    ",\n    IN p_user_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_user_max INT UNSIGNED,
    IN p_max_duration_s INT UNSIGNED",
    ", user_id = p_user_id, max_duration_s = p_max_duration_s",
    quota_declare!(),
    quota_check!(),
    "    SELECT 'claimed', 0;\n    END IF;\n"
);
