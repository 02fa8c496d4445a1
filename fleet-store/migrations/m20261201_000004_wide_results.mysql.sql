-- Frozen: a command's result, and the change-log entry that carries it, hold more
-- than a TEXT (64 KiB) once the agent's largest output is escaped.
-- Never edit a released migration: add a new one.

ALTER TABLE `commands` MODIFY `result` MEDIUMTEXT;
ALTER TABLE `change_log` MODIFY `payload` MEDIUMTEXT NOT NULL;
