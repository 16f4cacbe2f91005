import ControlProtocol
import Foundation
import Registry
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The libpq layer the PostgreSQL registry store stands on, against a real server.
@Suite(.serialized) struct PostgresConnectionTests {
    @Test func parameterizedQueriesTransactionsAndTypes() throws {
        let server = try TestPostgres()
        defer { server.stop() }
        let db = try PostgresConnection(url: server.url)
        try db.execute("CREATE TABLE versions (id BIGSERIAL PRIMARY KEY, model TEXT NOT NULL, score DOUBLE PRECISION, note TEXT)")
        // Quotes, Unicode and a null go as parameters, never into the SQL text.
        let note = "it's \"quoted\"; DROP TABLE versions; -- 北京 é"
        let inserted = try db.query("INSERT INTO versions (model, score, note) VALUES ($1, $2, $3) RETURNING id", [.text("credit"), .real(0.25), .text(note)])
        #expect(inserted == [[.integer(1)]])
        try db.query("INSERT INTO versions (model, score, note) VALUES ($1, $2, $3)", [.text("credit"), .null, .null])
        let rows = try db.query("SELECT id, model, score, note FROM versions ORDER BY id")
        #expect(rows == [[.integer(1), .text("credit"), .real(0.25), .text(note)], [.integer(2), .text("credit"), .null, .null]])

        // A failing transaction (the store's, over this layer) leaves nothing behind, and the error
        // names what failed.
        let store = try Database(postgres: server.url)
        #expect(throws: RegistryError.self) {
            try store.transaction { () throws(RegistryError) in
                try store.query("INSERT INTO versions (model) VALUES ($1)", [.text("fraud")])
                try store.query("INSERT INTO versions (model) VALUES ($1)", [.null])  // NOT NULL
            }
        }
        #expect(try db.query("SELECT count(*) FROM versions WHERE model = 'fraud'") == [[.integer(0)]])
        do throws(RegistryError) {
            try db.query("SELECT nothing FROM versions")
            Issue.record("a bad query succeeded")
        } catch { #expect(error.message.contains("column \"nothing\" does not exist"), "\(error.message)") }
    }

    @Test func notificationsReachAListenerAndAWaitIsBounded() throws {
        let server = try TestPostgres()
        defer { server.stop() }
        let listener = try PostgresConnection(url: server.url)
        let sender = try Database(postgres: server.url)
        try listener.listen("aliases")
        // Nothing sent: the wait ends empty at its timeout.
        #expect(try listener.nextNotification(timeout: 0.05) == nil)
        try sender.notify("aliases", payload: #"{"model":"credit","alias":"production","version":2}"#)
        let notice = try #require(try listener.nextNotification(timeout: 30))
        #expect(notice.channel == "aliases" && notice.payload.contains(#""version":2"#))
        // Inside a transaction, the notification comes at commit.
        try sender.transaction { () throws(RegistryError) in try sender.notify("aliases", payload: "in a transaction") }
        #expect(try listener.nextNotification(timeout: 30)?.payload == "in a transaction")
        #expect(throws: RegistryError.self) { try listener.listen("bad channel; DROP") }
    }

    @Test func aLostServerIsAnErrorAndTheConnectionComesBack() throws {
        let server = try TestPostgres()
        defer { server.stop() }
        let db = try PostgresConnection(url: server.url)
        try db.execute("CREATE TABLE t (x INT)")
        server.kill()
        do throws(RegistryError) {
            try db.query("SELECT 1")
            Issue.record("a query on a killed server succeeded")
        } catch { #expect(error.message.contains("PostgreSQL"), "\(error.message)") }
        #expect(!db.isConnected)
        #expect(throws: RegistryError.self) { try db.reconnect(timeout: 2) }
        try server.start()
        try db.reconnect()
        #expect(try db.query("SELECT count(*) FROM t") == [[.integer(0)]])
        // A URL's password is not in messages.
        let nobody = try TestPostgres.freePort()
        do throws(RegistryError) {
            _ = try PostgresConnection(url: "postgres://switchyard:hunter2@127.0.0.1:\(nobody)/postgres", timeout: 2)
            Issue.record("connected to a port nothing listens on")
        } catch {
            #expect(!error.message.contains("hunter2") && error.message.contains("cannot connect to PostgreSQL at postgres://switchyard@127.0.0.1"), "\(error.message)")
        }
    }
}
