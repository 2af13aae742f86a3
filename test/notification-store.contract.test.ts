import { notificationStoreContract } from "./contract/notification-store.contract.ts";
import { storeSubjects } from "./contract/subjects.ts";

// The NotificationStore contract over every implementation (test/contract/subjects.ts).
for (const subject of storeSubjects()) notificationStoreContract(subject);
