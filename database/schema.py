"""The schema of the study database: one sqlite-utils migration per change, recorded by name.

Written as SQL rather than ``table.create()`` because the CHECK constraints and foreign keys are
the point: the database itself refuses an unknown label, source or checkpoint. Never edit an
applied migration; add the next one at the end. (Declarative, hence longer than other modules.)
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils import Migrations

_NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"

MIGRATIONS = Migrations("polypturing")
"""The schema, one migration per change; ``database.connection.open_db`` applies the pending ones."""


@MIGRATIONS(name="0001_images_checkpoints_provenance")
def _create_core_tables(db: sqlite_utils.Database) -> None:
    # Written as SQL rather than table.create() because the CHECK constraints and foreign keys
    # are the point: the database itself refuses an unknown label, source or checkpoint.
    strict = " STRICT" if db.supports_strict else ""
    db.execute(f"""
        CREATE TABLE checkpoints (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL,
            name TEXT NOT NULL,
            step INTEGER NOT NULL CHECK (step >= 0),
            stage INTEGER NULL CHECK (stage IN (1, 2)),
            kind TEXT NOT NULL CHECK (kind IN ('pipeline', 'training-output')),
            fingerprint TEXT NOT NULL CHECK (length(fingerprint) > 0),
            base_path TEXT NULL,
            metadata TEXT NULL CHECK (metadata IS NULL OR json_valid(metadata)),
            discovered_at TEXT NOT NULL DEFAULT {_NOW},
            UNIQUE (path, fingerprint)
        ){strict}""")
    db.execute(f"""
        CREATE TABLE images (
            sha256 TEXT PRIMARY KEY
                CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
            source TEXT NOT NULL CHECK (source IN ('real', 'synthetic')),
            label TEXT NOT NULL CHECK (label IN ('AD', 'NonAD')),
            path TEXT NOT NULL,
            width INTEGER NOT NULL CHECK (width > 0),
            height INTEGER NOT NULL CHECK (height > 0),
            origin TEXT NULL,
            created_at TEXT NOT NULL DEFAULT {_NOW}
        ){strict}""")
    db.execute(f"""
        CREATE TABLE provenance (
            image_sha256 TEXT PRIMARY KEY REFERENCES images(sha256),
            checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id),
            prompt TEXT NOT NULL,
            negative_prompt TEXT NOT NULL,
            seed INTEGER NOT NULL,
            scheduler TEXT NOT NULL,
            steps INTEGER NOT NULL CHECK (steps > 0),
            guidance REAL NOT NULL,
            width INTEGER NOT NULL CHECK (width > 0),
            height INTEGER NOT NULL CHECK (height > 0),
            seconds REAL NOT NULL CHECK (seconds >= 0),
            created_at TEXT NOT NULL DEFAULT {_NOW}
        ){strict}""")
    db.execute("CREATE INDEX images_source_label ON images(source, label)")
    db.execute("CREATE INDEX provenance_checkpoint ON provenance(checkpoint_id)")





@MIGRATIONS(name="0002_review_studies_raters_trials_ratings")
def _create_review_tables(db: sqlite_utils.Database) -> None:
    strict = " STRICT" if db.supports_strict else ""
    db.execute(f"""
        CREATE TABLE raters (
            id INTEGER PRIMARY KEY,
            username TEXT NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 64),
            role TEXT NOT NULL CHECK (role IN ('rater', 'admin')),
            password_hash TEXT NULL,
            specialty TEXT NULL,
            years_practice INTEGER NULL CHECK (years_practice IS NULL OR years_practice BETWEEN 0 AND 70),
            colonoscopies TEXT NULL,
            profile_at TEXT NULL,
            simulated INTEGER NOT NULL DEFAULT 0 CHECK (simulated IN (0, 1)),
            created_at TEXT NOT NULL DEFAULT {_NOW}
        ){strict}""")
    # Tokens are stored as their sha256: a copy of the database signs nobody in.
    db.execute(f"""
        CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,
            rater_id INTEGER NOT NULL REFERENCES raters(id),
            created_at TEXT NOT NULL DEFAULT {_NOW},
            expires_at TEXT NOT NULL
        ){strict}""")
    db.execute(f"""
        CREATE TABLE studies (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
            mode TEXT NOT NULL CHECK (mode IN ('single', 'pair')),
            design TEXT NOT NULL CHECK (json_valid(design)),
            presentation TEXT NOT NULL CHECK (json_valid(presentation)),
            status TEXT NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'open', 'closed')),
            audit TEXT NULL CHECK (audit IS NULL OR json_valid(audit)),
            audit_override TEXT NULL CHECK (audit_override IS NULL OR json_valid(audit_override)),
            simulated INTEGER NOT NULL DEFAULT 0 CHECK (simulated IN (0, 1)),
            created_by INTEGER NULL REFERENCES raters(id),
            created_at TEXT NOT NULL DEFAULT {_NOW},
            opened_at TEXT NULL,
            closed_at TEXT NULL
        ){strict}""")
    db.execute(f"""
        CREATE TABLE invitations (
            token_hash TEXT PRIMARY KEY,
            study_id INTEGER NOT NULL REFERENCES studies(id),
            rater_id INTEGER NOT NULL REFERENCES raters(id),
            created_at TEXT NOT NULL DEFAULT {_NOW},
            expires_at TEXT NOT NULL
        ){strict}""")
    db.execute(f"""
        CREATE TABLE study_raters (
            study_id INTEGER NOT NULL REFERENCES studies(id),
            rater_id INTEGER NOT NULL REFERENCES raters(id),
            PRIMARY KEY (study_id, rater_id)
        ){strict}""")
    # Every image a study shows, real, synthetic or attention check, under a random token; the
    # presented file is what the browser receives. Attention images are not in `images`.
    db.execute(f"""
        CREATE TABLE study_images (
            study_id INTEGER NOT NULL REFERENCES studies(id),
            sha256 TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('real', 'synthetic', 'attention')),
            label TEXT NULL CHECK (label IS NULL OR label IN ('AD', 'NonAD')),
            checkpoint_id INTEGER NULL REFERENCES checkpoints(id),
            source_path TEXT NOT NULL,
            token TEXT NOT NULL UNIQUE,
            presented_path TEXT NOT NULL,
            PRIMARY KEY (study_id, sha256)
        ){strict}""")
    db.execute(f"""
        CREATE TABLE trials (
            id INTEGER PRIMARY KEY,
            study_id INTEGER NOT NULL REFERENCES studies(id),
            rater_id INTEGER NOT NULL REFERENCES raters(id),
            position INTEGER NOT NULL CHECK (position >= 0),
            kind TEXT NOT NULL CHECK (kind IN ('normal', 'repeat', 'attention')),
            image_left TEXT NOT NULL,
            image_right TEXT NULL,
            synthetic_side TEXT NULL CHECK (synthetic_side IS NULL OR synthetic_side IN ('left', 'right')),
            repeat_of INTEGER NULL,
            cell TEXT NOT NULL,
            shown_at TEXT NULL,
            UNIQUE (study_id, rater_id, position),
            FOREIGN KEY (study_id, image_left) REFERENCES study_images(study_id, sha256),
            FOREIGN KEY (study_id, image_right) REFERENCES study_images(study_id, sha256)
        ){strict}""")
    db.execute(f"""
        CREATE TABLE ratings (
            id INTEGER PRIMARY KEY,
            trial_id INTEGER NOT NULL UNIQUE REFERENCES trials(id),
            rater_id INTEGER NOT NULL REFERENCES raters(id),
            idempotency_key TEXT NOT NULL UNIQUE CHECK (length(idempotency_key) BETWEEN 8 AND 128),
            real_or_synthetic TEXT NULL CHECK (real_or_synthetic IS NULL OR real_or_synthetic IN ('real', 'synthetic')),
            source_confidence INTEGER NULL CHECK (source_confidence IS NULL OR source_confidence BETWEEN 1 AND 5),
            realism INTEGER NULL CHECK (realism IS NULL OR realism BETWEEN 1 AND 5),
            pathology TEXT NULL CHECK (pathology IS NULL OR pathology IN ('AD', 'NonAD', 'cannot tell')),
            pathology_confidence INTEGER NULL CHECK (pathology_confidence IS NULL OR pathology_confidence BETWEEN 1 AND 5),
            synthetic_choice TEXT NULL CHECK (synthetic_choice IS NULL OR synthetic_choice IN ('left', 'right')),
            choice_confidence INTEGER NULL CHECK (choice_confidence IS NULL OR choice_confidence BETWEEN 1 AND 5),
            pathology_left TEXT NULL CHECK (pathology_left IS NULL OR pathology_left IN ('AD', 'NonAD', 'cannot tell')),
            pathology_right TEXT NULL CHECK (pathology_right IS NULL OR pathology_right IN ('AD', 'NonAD', 'cannot tell')),
            artifacts TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(artifacts)),
            comment TEXT NOT NULL DEFAULT '' CHECK (length(comment) <= 2000),
            response_ms INTEGER NULL CHECK (response_ms IS NULL OR response_ms >= 0),
            submitted_at TEXT NOT NULL DEFAULT {_NOW}
        ){strict}""")
    db.execute("CREATE INDEX trials_rater ON trials(study_id, rater_id, position)")
    db.execute("CREATE INDEX ratings_rater ON ratings(rater_id)")


@MIGRATIONS(name="0003_metric_results")
def _create_metric_results(db: sqlite_utils.Database) -> None:
    # One row per (checkpoint, scope, metric, extractor, preprocessing): a refresh replaces it.
    strict = " STRICT" if db.supports_strict else ""
    db.execute(f"""
        CREATE TABLE metric_results (
            id INTEGER PRIMARY KEY,
            checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id),
            scope TEXT NOT NULL CHECK (scope IN ('AD', 'NonAD', 'pooled')),
            metric TEXT NOT NULL CHECK (length(metric) > 0),
            value REAL NULL,
            ci_low REAL NULL,
            ci_high REAL NULL,
            extractor TEXT NOT NULL,
            preprocessing TEXT NOT NULL,
            n_real INTEGER NOT NULL CHECK (n_real >= 0),
            n_fake INTEGER NOT NULL CHECK (n_fake >= 0),
            details TEXT NULL CHECK (details IS NULL OR json_valid(details)),
            computed_at TEXT NOT NULL DEFAULT {_NOW},
            UNIQUE (checkpoint_id, scope, metric, extractor, preprocessing)
        ){strict}""")


@MIGRATIONS(name="0004_masks")
def _create_masks(db: sqlite_utils.Database) -> None:
    # One polyp mask per image (real or synthetic); SQL in database/masks.py. `reading` holds
    # how the file was read (colour map, threshold) so a colour-coded or lossy mask reads the same again.
    strict = " STRICT" if db.supports_strict else ""
    db.execute(f"""
        CREATE TABLE masks (
            image_sha256 TEXT PRIMARY KEY REFERENCES images(sha256),
            mask_path TEXT NOT NULL CHECK (length(mask_path) > 0),
            mask_sha256 TEXT NOT NULL
                CHECK (length(mask_sha256) = 64 AND mask_sha256 NOT GLOB '*[^0-9a-f]*'),
            mask_label TEXT NULL CHECK (mask_label IS NULL OR mask_label IN ('AD', 'NonAD')),
            area_fraction REAL NOT NULL CHECK (area_fraction > 0 AND area_fraction <= 1),
            mask_source TEXT NOT NULL CHECK (mask_source IN ('real', 'augmented', 'procedural', 'phantom')),
            mask_provenance TEXT NULL,
            reading TEXT NULL CHECK (reading IS NULL OR json_valid(reading)),
            created_at TEXT NOT NULL DEFAULT {_NOW}
        ){strict}""")
    db.execute("CREATE INDEX masks_source ON masks(mask_source)")


@MIGRATIONS(name="0005_rating_mask_fit")
def _add_rating_mask_fit(db: sqlite_utils.Database) -> None:
    # Studies that show a polyp mask's outline ask whether it fits the lesion (review.design show_masks).
    db.execute("ALTER TABLE ratings ADD COLUMN mask_fit TEXT NULL"
               " CHECK (mask_fit IS NULL OR mask_fit IN ('fits', 'partly', 'does not fit'))")


@MIGRATIONS(name="0006_session_hardening")
def _harden_sessions(db: sqlite_utils.Database) -> None:
    # Sessions end on sign-out or an admin's revoke (revoked_at) and after idling (last_seen_at);
    # an invitation turns into a session once (redeemed_at) and a re-issued one replaces it
    # (revoked_at). Failed sign-ins are counted per user name and per client for throttling.
    strict = " STRICT" if db.supports_strict else ""
    db.execute("ALTER TABLE sessions ADD COLUMN last_seen_at TEXT NULL")
    db.execute("ALTER TABLE sessions ADD COLUMN revoked_at TEXT NULL")
    db.execute("ALTER TABLE invitations ADD COLUMN redeemed_at TEXT NULL")
    db.execute("ALTER TABLE invitations ADD COLUMN revoked_at TEXT NULL")
    db.execute("CREATE INDEX sessions_rater ON sessions(rater_id)")
    db.execute("CREATE INDEX invitations_rater ON invitations(study_id, rater_id)")
    db.execute(f"""
        CREATE TABLE sign_in_failures (
            key TEXT PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 300),
            failures INTEGER NOT NULL CHECK (failures > 0),
            last_failure_at TEXT NOT NULL
        ){strict}""")


@MIGRATIONS(name="0007_image_sets")
def _create_image_sets(db: sqlite_utils.Database) -> None:
    # Named sets of real images with their own flags and provenance (SQL in database/image_sets.py).
    # Real images registered before sets existed go into 'default', flagged clinical and not public.
    strict = " STRICT" if db.supports_strict else ""
    db.execute(f"""
        CREATE TABLE image_sets (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
            kind TEXT NOT NULL CHECK (kind IN ('clinical', 'phantom-demo')),
            public INTEGER NOT NULL DEFAULT 0 CHECK (public IN (0, 1)),
            provenance TEXT NOT NULL DEFAULT '{{}}' CHECK (json_valid(provenance)),
            created_at TEXT NOT NULL DEFAULT {_NOW}
        ){strict}""")
    db.execute(f"""
        CREATE TABLE image_set_members (
            set_id INTEGER NOT NULL REFERENCES image_sets(id),
            image_sha256 TEXT NOT NULL REFERENCES images(sha256),
            origin TEXT NULL,
            added_at TEXT NOT NULL DEFAULT {_NOW},
            PRIMARY KEY (set_id, image_sha256)
        ){strict}""")
    db.execute("CREATE INDEX image_set_members_image ON image_set_members(image_sha256)")
    db.execute("""
        CREATE TRIGGER image_set_members_real_only BEFORE INSERT ON image_set_members
        WHEN (SELECT source FROM images WHERE sha256 = NEW.image_sha256) IS NOT 'real'
        BEGIN SELECT RAISE(ABORT, 'only real images belong to image sets'); END""")
    if db.execute("SELECT count(*) FROM images WHERE source = 'real'").fetchone()[0]:
        db.execute("INSERT INTO image_sets (name, kind, public, provenance) VALUES ('default', 'clinical', 0, ?)",
                   ['{"made_by": "migration 0007_image_sets", "note": "real images registered before image sets"}'])
        db.execute("INSERT INTO image_set_members (set_id, image_sha256, origin)"
                   " SELECT (SELECT id FROM image_sets WHERE name = 'default'), sha256, origin"
                   " FROM images WHERE source = 'real'")
