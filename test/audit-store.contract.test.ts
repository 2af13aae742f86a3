import { auditStoreContract } from "./contract/audit-store.contract.ts";
import { storeSubjects } from "./contract/subjects.ts";

// The AuditStore contract over every implementation (test/contract/subjects.ts).
for (const subject of storeSubjects()) auditStoreContract(subject);
