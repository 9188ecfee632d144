-- Titles written before the API trimmed them kept their surrounding blanks, so they sorted and
-- matched differently from new ones. Trimmed once; an empty result keeps the old title (a
-- title may not be empty).
UPDATE notes
SET title = btrim(title), updated_at = now()
WHERE title <> btrim(title) AND btrim(title) <> '';
