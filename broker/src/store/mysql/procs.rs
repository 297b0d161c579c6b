//! The stored procedures: one definition each, here, created at start-up under the schema lock.
//!
//! Why procedures: a change is a transaction of several statements, and each statement sent
//! on its own is a round trip (with START TRANSACTION and COMMIT, five for a transition).
//! Measured in `arcade-bench pairs --mariadb` starts: a transition took 1.19 ms as five round
//! trips and 0.86 ms as one `CALL`; an insert 1.57 and 0.96 ms. The lifecycle stays in Rust
//! (`session::apply`): a procedure only checks that the row is still in the state the change
//! was computed from (compare and set), and writes it with its history and stream event.
//!
//! A procedure's name carries the first 8 hex digits of its text's SHA-256
//! (`arcade_transition_1a2b3c4d`), and a procedure calling another names it by that name. So a
//! changed procedure is a new one, created beside the old: nothing is ever dropped or
//! replaced, there is no moment in which a procedure is missing, and brokers of two versions
//! can share a database during an upgrade, each calling its own. Migrations hold tables only;
//! those released before this module created fixed-name procedures that nothing calls now.
//!
//! Every VARCHAR parameter names its character set: a parameter otherwise takes the
//! database's default, which may be latin1. The exit handler rolls back before re-raising,
//! so a failed call never leaves a transaction open on a pooled connection.
//!
//! Fencing: a write about a host made by its owner carries the epoch of the owner's
//! connection; it applies only while the host's epoch is still that one, read under a shared
//! lock, so a new connection's claim of the host waits for it or it sees the claim.
//!
//! On a Galera cluster a lock holds on its own node only; what makes concurrent changes on
//! two nodes exact is that Galera commits only one of two transactions that wrote the same
//! row. So a procedure that decides on rows it does not change (counting a host's or a
//! user's live sessions) first writes a row every such decision writes (`hosts.claims`,
//! `user_locks.claims`), before it reads: a concurrent decision on another node then either
//! was applied here before the read (and is counted), or conflicts (1213, and the whole call
//! is made again: [`super::MysqlStore`]'s `bounded`). A row read `FOR UPDATE` and then
//! written (a session's compare and set, a pool's ready game) needs nothing more: a write
//! from another node that arrives while it is locked here aborts the local transaction.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

/// The statuses in which a session holds its host's slot and its user's quota.
macro_rules! live {
    () => {
        "('starting', 'ready', 'running', 'stopping')"
    };
}

/// A procedure as written: its base name, and its parameters and body, in which `{append}`
/// stands for [`APPEND_EVENT`]'s name.
struct Definition {
    base: &'static str,
    text: &'static str,
}

/// Appends one event to the stream, numbered next; runs inside its caller's transaction. Its
/// number comes from one counter row, taken last before the commit: the row's lock orders the
/// events' commits, so numbers commit in order and without a gap (a rolled-back change gives
/// its number back). An AUTO_INCREMENT would not do: it is assigned at insert, so a reader
/// could see 105 before 104 commits and skip 104.
const APPEND_EVENT: Definition = Definition {
    base: "arcade_append_event",
    text: "(
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
END",
};

/// Records a new session as it is, with one or two history events and their stream events,
/// in one transaction. With `p_epoch`, only while the host's epoch is still that one. Answers
/// one row: 1 inserted, 2 fenced (nothing written). A duplicate session id raises 1062.
const INSERT_SESSION: Definition = Definition {
    base: "arcade_insert_session",
    text: "(
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
    IN p_pool_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_settings TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_ports VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_user_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_max_duration_s INT UNSIGNED,
    IN p_build CHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_slots INT UNSIGNED,
    IN p_gpus VARCHAR(1024) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_gpu_count INT UNSIGNED,
    IN p_labels TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_unclaimed BOOLEAN,
    IN p_event VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
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
    IN p_body2 MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_epoch BIGINT UNSIGNED)
BEGIN
    DECLARE v_epoch BIGINT UNSIGNED DEFAULT NULL;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_epoch = NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    IF p_epoch IS NOT NULL THEN
        SELECT epoch INTO v_epoch FROM hosts WHERE host_id = p_host_id LOCK IN SHARE MODE;
    END IF;
    IF p_epoch IS NOT NULL AND (v_epoch IS NULL OR v_epoch <> p_epoch) THEN
        ROLLBACK;
        SELECT 2;
    ELSE
        INSERT INTO sessions (session_id, game_id, mode, config, status, host_id, ip, port, pid,
            created_at, started_at, ended_at, end_reason, exit_code, pool_id, settings, ports,
            user_id, max_duration_s, build, slots, gpus, gpu_count, labels, unclaimed)
        VALUES (p_session_id, p_game_id, p_mode, p_config, p_status, p_host_id, p_ip, p_port,
            p_pid, p_created_at, p_started_at, p_ended_at, p_end_reason, p_exit_code, p_pool_id,
            p_settings, p_ports, p_user_id, p_max_duration_s, p_build, p_slots, p_gpus,
            p_gpu_count, p_labels, p_unclaimed);
        INSERT INTO session_events (session_id, at, event, status, actor)
        VALUES (p_session_id, p_event_at, p_event, p_event_status, p_actor);
        IF p_event2 IS NOT NULL THEN
            INSERT INTO session_events (session_id, at, event, status, actor)
            VALUES (p_session_id, p_event2_at, p_event2, p_event2_status, p_actor2);
        END IF;
        CALL {append}(p_event_at, p_type, p_actor, p_session_id, p_host_id, p_body);
        IF p_type2 IS NOT NULL THEN
            CALL {append}(p_event2_at, p_type2, p_actor2, p_session_id, p_host_id, p_body2);
        END IF;
        COMMIT;
        SELECT 1;
    END IF;
END",
};

/// Locks the session's row; if its status is still `p_from` (and, with `p_epoch`, the host
/// `p_host_id` is still at that epoch; and, with `p_lease_epoch`, `p_holder` still holds the
/// unexpired lease `p_lease` at that epoch, read under a shared lock so a takeover waits for
/// this change or this change sees it), writes the new state, its history event and its
/// stream event (`p_type` NULL: none, the status did not change) and commits. A session that
/// becomes `failed` forgets its `Idempotency-Key` in the same transaction, whoever failed it
/// (the start itself, the sweep, a reconcile after a crash): a failed start may be retried.
/// Answers one row: 1 applied, 0 changed meanwhile (or no such session: the status found is
/// NULL), 2 fenced (the host moved on), 3 the lease is no longer held; and the status found.
const TRANSITION: Definition = Definition {
    base: "arcade_transition",
    text: "(
    IN p_session_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_from VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_status VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_ip VARCHAR(45) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_port INT UNSIGNED,
    IN p_pid INT UNSIGNED,
    IN p_ports VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_started_at DATETIME(6),
    IN p_ended_at DATETIME(6),
    IN p_end_reason VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_exit_code INT,
    IN p_at DATETIME(6),
    IN p_event VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_actor VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_type VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_body MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_host_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_epoch BIGINT UNSIGNED,
    IN p_lease VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_holder VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_lease_epoch BIGINT UNSIGNED)
BEGIN
    DECLARE v_found VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL;
    DECLARE v_host VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL;
    DECLARE v_epoch BIGINT UNSIGNED DEFAULT NULL;
    DECLARE v_held INT UNSIGNED DEFAULT 1;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_found = NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    SELECT status, host_id INTO v_found, v_host FROM sessions
        WHERE session_id = p_session_id FOR UPDATE;
    IF p_epoch IS NOT NULL THEN
        SELECT epoch INTO v_epoch FROM hosts WHERE host_id = p_host_id LOCK IN SHARE MODE;
    END IF;
    IF p_lease_epoch IS NOT NULL THEN
        SELECT COUNT(*) INTO v_held FROM leases
            WHERE name = p_lease AND holder = p_holder AND epoch = p_lease_epoch
            AND expires_at > UTC_TIMESTAMP(6) LOCK IN SHARE MODE;
    END IF;
    IF p_epoch IS NOT NULL AND (v_epoch IS NULL OR v_epoch <> p_epoch) THEN
        ROLLBACK;
        SELECT 2, v_found;
    ELSEIF v_held = 0 THEN
        ROLLBACK;
        SELECT 3, v_found;
    ELSEIF v_found = p_from THEN
        UPDATE sessions SET status = p_status, ip = p_ip, port = p_port, pid = p_pid,
            ports = p_ports, started_at = p_started_at, ended_at = p_ended_at,
            end_reason = p_end_reason, exit_code = p_exit_code
        WHERE session_id = p_session_id;
        INSERT INTO session_events (session_id, at, event, status, actor)
        VALUES (p_session_id, p_at, p_event, p_status, p_actor);
        IF p_status = 'failed' THEN
            DELETE FROM idempotency_keys WHERE session_id = p_session_id;
        END IF;
        IF p_type IS NOT NULL THEN
            CALL {append}(p_at, p_type, p_actor, p_session_id, v_host, p_body);
        END IF;
        COMMIT;
        SELECT 1, v_found;
    ELSE
        ROLLBACK;
        SELECT 0, v_found;
    END IF;
END",
};

/// Records a session `starting` on a host in one transaction under READ COMMITTED, checking
/// first what only the store can check across replicas: the user's quota (a start naming a
/// user, with a maximum: the user's row of `user_locks` is written, made on first use, and
/// its live sessions counted, so concurrent starts of one user through any replicas queue on
/// it), then the host (its row written, then read: it has an owner, at `p_epoch` when given, is ready and not
/// drained, and its live sessions are fewer than its `max_sessions`). Then binds the
/// `Idempotency-Key` (when given; a duplicate raises 1062, read as "taken") and inserts the
/// session, its first event and `session.created`. Answers one row: `new`, `full`, `gone` or
/// `quota`, and the host's epoch. MariaDB's default REPEATABLE READ would take gap locks on
/// the counts and deadlock concurrent claims instead of queueing them.
const CLAIM_SESSION: Definition = Definition {
    base: "arcade_claim_session",
    text: concat!(
        "(
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
    IN p_body MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_pool_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_settings TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_user_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_user_max INT UNSIGNED,
    IN p_max_duration_s INT UNSIGNED,
    IN p_build CHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_slots INT UNSIGNED,
    IN p_gpus VARCHAR(1024) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_gpu_count INT UNSIGNED,
    IN p_labels TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_unclaimed BOOLEAN,
    IN p_epoch BIGINT UNSIGNED)
BEGIN
    DECLARE v_max INT UNSIGNED DEFAULT NULL;
    DECLARE v_owner VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL;
    DECLARE v_ready BOOLEAN DEFAULT FALSE;
    DECLARE v_drained BOOLEAN DEFAULT TRUE;
    DECLARE v_epoch BIGINT UNSIGNED DEFAULT 0;
    DECLARE v_used INT UNSIGNED DEFAULT 0;
    DECLARE v_mine INT UNSIGNED DEFAULT 0;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_max = NULL;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    SET TRANSACTION ISOLATION LEVEL READ COMMITTED;
    START TRANSACTION;
    IF p_user_id IS NOT NULL AND p_user_max IS NOT NULL THEN
        INSERT INTO user_locks (user_id) VALUES (p_user_id)
            ON DUPLICATE KEY UPDATE claims = claims + 1;
        SELECT COUNT(*) INTO v_mine FROM sessions
            WHERE user_id = p_user_id AND status IN ",
        live!(),
        ";
    END IF;
    IF v_mine >= COALESCE(p_user_max, 4294967295) THEN
        ROLLBACK;
        SELECT 'quota', 0;
    ELSE
        UPDATE hosts SET claims = claims + 1 WHERE host_id = p_host_id;
        SELECT max_sessions, owner, ready, drained, epoch
            INTO v_max, v_owner, v_ready, v_drained, v_epoch
            FROM hosts WHERE host_id = p_host_id FOR UPDATE;
        IF v_max IS NULL OR v_owner IS NULL OR NOT v_ready OR v_drained
            OR v_epoch <> COALESCE(p_epoch, v_epoch) THEN
            ROLLBACK;
            SELECT 'gone', 0;
        ELSE
            SELECT COALESCE(SUM(slots), 0) INTO v_used FROM sessions
                WHERE host_id = p_host_id AND status IN ",
        live!(),
        ";
            IF v_used + p_slots > v_max THEN
                ROLLBACK;
                SELECT 'full', v_epoch;
            ELSE
                IF p_key IS NOT NULL THEN
                    DELETE FROM idempotency_keys
                        WHERE idem_key = p_key AND created_at < p_key_expired;
                    INSERT INTO idempotency_keys (idem_key, request, session_id, created_at)
                    VALUES (p_key, p_request, p_session_id, p_created_at);
                END IF;
                INSERT INTO sessions (session_id, game_id, mode, config, status, host_id,
                    created_at, pool_id, settings, user_id, max_duration_s, build, slots, gpus,
                    gpu_count, labels, unclaimed)
                VALUES (p_session_id, p_game_id, p_mode, p_config, p_status, p_host_id,
                    p_created_at, p_pool_id, p_settings, p_user_id, p_max_duration_s, p_build,
                    p_slots, p_gpus, p_gpu_count, p_labels, p_unclaimed);
                INSERT INTO session_events (session_id, at, event, status, actor)
                VALUES (p_session_id, p_created_at, 'created', p_status, p_actor);
                CALL {append}(p_created_at, 'session.created', p_actor, p_session_id,
                    p_host_id, p_body);
                COMMIT;
                SELECT 'new', v_epoch;
            END IF;
        END IF;
    END IF;
END"
    ),
};

/// Takes a pool's ready session for a start, in the transaction in which the caller locked
/// its row (`SELECT ... FOR UPDATE SKIP LOCKED`): within the claiming user's quota (counted as
/// [`CLAIM_SESSION`] does), binds the `Idempotency-Key` (when given; a duplicate raises 1062,
/// read as "taken"), writes the claim (status, `started_at`, the user and limit, the history,
/// the stream), counts it on the pool, and commits. Answers `claimed` or `quota`. Locks are
/// taken in one order (the pool's session, then the user), as in [`CLAIM_SESSION`] (the user,
/// then the host): no two claims wait on each other in a cycle.
const CLAIM_READY: Definition = Definition {
    base: "arcade_claim_ready",
    text: concat!(
        "(
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
    IN p_key_expired DATETIME(6),
    IN p_user_id VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN p_user_max INT UNSIGNED,
    IN p_max_duration_s INT UNSIGNED)
BEGIN
    DECLARE v_mine INT UNSIGNED DEFAULT 0;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    IF p_user_id IS NOT NULL AND p_user_max IS NOT NULL THEN
        INSERT INTO user_locks (user_id) VALUES (p_user_id)
            ON DUPLICATE KEY UPDATE claims = claims + 1;
        SELECT COUNT(*) INTO v_mine FROM sessions
            WHERE user_id = p_user_id AND status IN ",
        live!(),
        ";
    END IF;
    IF v_mine >= COALESCE(p_user_max, 4294967295) THEN
        ROLLBACK;
        SELECT 'quota', 0;
    ELSE
        IF p_key IS NOT NULL THEN
            DELETE FROM idempotency_keys WHERE idem_key = p_key AND created_at < p_key_expired;
            INSERT INTO idempotency_keys (idem_key, request, session_id, created_at)
            VALUES (p_key, p_request, p_session_id, p_at);
        END IF;
        UPDATE sessions SET status = p_status, started_at = p_at, user_id = p_user_id,
            max_duration_s = p_max_duration_s, unclaimed = FALSE
            WHERE session_id = p_session_id;
        INSERT INTO session_events (session_id, at, event, status, actor)
        VALUES (p_session_id, p_at, 'claimed', p_status, p_actor);
        CALL {append}(p_at, p_type, p_actor, p_session_id, p_host_id, p_body);
        UPDATE pools SET claims = claims + 1 WHERE pool_id = p_pool_id;
        COMMIT;
        SELECT 'claimed', 0;
    END IF;
END"
    ),
};

/// Every procedure, each after those it calls.
const ALL: [Definition; 5] = [
    APPEND_EVENT,
    INSERT_SESSION,
    TRANSITION,
    CLAIM_SESSION,
    CLAIM_READY,
];

/// A procedure as created: its name, and the statement that creates it.
#[derive(Debug)]
pub(super) struct Proc {
    pub name: String,
    pub create: String,
}

/// The procedures, named by their texts, in creation order.
static PROCS: LazyLock<Vec<Proc>> = LazyLock::new(|| {
    let mut names: HashMap<&str, String> = HashMap::new();
    ALL.iter()
        .map(|d| {
            let text = match names.get(APPEND_EVENT.base) {
                Some(append) => d.text.replace("{append}", append),
                None => d.text.to_owned(),
            };
            let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
            let mut name = format!("{}_", d.base);
            for b in &digest.as_ref()[..4] {
                let _ = write!(name, "{b:02x}");
            }
            names.insert(d.base, name.clone());
            Proc {
                create: format!("CREATE PROCEDURE {name}{text}"),
                name,
            }
        })
        .collect()
});

/// The procedures to create, in order.
pub(super) fn all() -> &'static [Proc] {
    &PROCS
}

/// The name of the procedure whose base name is `base`.
fn name(base: &str) -> &'static str {
    PROCS
        .iter()
        .find(|p| p.name.strip_prefix(base).is_some_and(|h| h.len() == 9))
        .map_or("arcade_missing_procedure", |p| p.name.as_str())
}

/// `CALL name(?, ...)` for the procedure `base` with `params` parameters.
fn call(base: &str, params: usize) -> String {
    let marks = vec!["?"; params].join(", ");
    format!("CALL {}({marks})", name(base))
}

/// The statements that call each procedure, built once.
pub(super) struct Calls {
    /// [`APPEND_EVENT`].
    pub append_event: String,
    /// [`INSERT_SESSION`].
    pub insert_session: String,
    /// [`TRANSITION`].
    pub transition: String,
    /// [`CLAIM_SESSION`].
    pub claim_session: String,
    /// [`CLAIM_READY`].
    pub claim_ready: String,
}

/// The calls of the procedures.
pub(super) static CALL: LazyLock<Calls> = LazyLock::new(|| Calls {
    append_event: call(APPEND_EVENT.base, 6),
    insert_session: call(INSERT_SESSION.base, 38),
    transition: call(TRANSITION.base, 21),
    claim_session: call(CLAIM_SESSION.base, 24),
    claim_ready: call(CLAIM_READY.base, 14),
});

#[cfg(test)]
mod tests {
    use super::*;

    /// A call passes as many parameters as its procedure declares.
    fn declared(text: &str) -> usize {
        let params = text.split_once("BEGIN").map_or("", |(p, _)| p);
        params.matches("\n    IN p_").count()
    }

    #[test]
    fn each_procedure_is_named_by_its_text_and_called_with_its_parameters() {
        let procs = all();
        assert_eq!(procs.len(), ALL.len());
        for (p, d) in procs.iter().zip(ALL.iter()) {
            assert!(p.name.starts_with(d.base) && p.name.len() == d.base.len() + 9);
            assert!(p
                .create
                .starts_with(&format!("CREATE PROCEDURE {}(", p.name)));
            assert!(!p.create.contains("{append}"), "{}", p.name);
        }
        // A procedure that calls another names it by its hashed name.
        let append = &procs[0].name;
        assert!(procs[1].create.contains(&format!("CALL {append}(")));
        for (sql, d) in [
            (&CALL.append_event, &APPEND_EVENT),
            (&CALL.insert_session, &INSERT_SESSION),
            (&CALL.transition, &TRANSITION),
            (&CALL.claim_session, &CLAIM_SESSION),
            (&CALL.claim_ready, &CLAIM_READY),
        ] {
            assert_eq!(sql.matches('?').count(), declared(d.text), "{sql}");
            assert!(!sql.contains("arcade_missing_procedure"), "{sql}");
        }
    }
}
