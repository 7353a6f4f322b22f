-- Messages submitted over SMTP keep their MIME bytes as the client built them.
ALTER TABLE messages ADD COLUMN raw_mime BLOB;
