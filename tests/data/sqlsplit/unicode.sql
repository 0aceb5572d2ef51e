-- 한국어 주석; 세미콜론
CREATE TABLE "사용자" (id INTEGER PRIMARY KEY, 이름 TEXT);
INSERT INTO "사용자" (이름) VALUES ('홍길동'), ('김철수; 😀');
SELECT 이름 FROM "사용자" WHERE 이름 = '홍길동';
